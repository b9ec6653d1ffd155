#!/usr/bin/env bash
# What talking to the application's backend costs, side by side in one run on one machine:
#   1. client messages forwarded: the echo scenario with no backend, with every message
#      forwarded to a webhook (corecast-sink), and with every message published to NATS;
#   2. the connect rate: the upgrades scenario with no backend and with a connect hook
#      (corecast-sink answering {} to each).
# The server runs on SERVER_CPUS, the generator on LOAD_CPUS. Each run is bounded by
# --duration; the sink's and the server's counts are checked against the generator's.
#   bench/backend-cost.sh BIN_DIR OUT_DIR [DURATION]
#   e.g. bench/backend-cost.sh target/release /tmp/backend-cost 10s
set -euo pipefail
bin=${1:?binary folder with corecast, corecast-load and corecast-sink}
out=${2:?output folder}
duration=${3:-10s}
server_cpus=${SERVER_CPUS:-0}
load_cpus=${LOAD_CPUS:-1}
mkdir -p "$out"
ulimit -l unlimited 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

port=19700
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }
sink_events() { curl -s http://127.0.0.1:19790/count | sed 's/.*"events":\([0-9]*\).*/\1/'; }
metric() { curl -s "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

"$bin/corecast-sink" --listen 127.0.0.1:19790 >"$out/sink.log" &
sink=$!
nats-server -a 127.0.0.1 -p 19791 2>"$out/nats.log" &
nats=$!
trap 'kill $sink $nats 2>/dev/null || true' EXIT
wait_port 19790; wait_port 19791

# run NAME SCENARIO LOAD_ARGS -- SERVER_ARGS...
run() {
  local name=$1 scenario=$2 load_args=$3; shift 4
  port=$((port + 1)); local api=$((port + 50))
  taskset -c "$server_cpus" "$bin/corecast" --mode echo --listen "127.0.0.1:$port" \
    --api-listen "127.0.0.1:$api" --shards 1 --client-message-rate 0 --client-byte-rate 0 \
    --ping-interval 10s "$@" 2>"$out/server-$name.log" &
  local pid=$!
  wait_port "$port"
  local before; before=$(sink_events)
  # shellcheck disable=SC2086
  "$bin/corecast-load" "$scenario" --url "ws://127.0.0.1:$port/ws" --duration "$duration" \
    --cpus "$load_cpus" --server-pid "$pid" --quiet --json "$out/$name.json" $load_args \
    | sed "s/^/[$name] /"
  metric 'corecast_backend_events_total{outcome="nats_sent"}' "$api" >"$out/$name.nats"
  metric 'corecast_backend_hook_calls_total{hook="connect",outcome="allowed"}' "$api" >"$out/$name.hooks"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # What the sink took, counted on its side (a stopping server delivers its last events).
  echo $(( $(sink_events) - before )) >"$out/$name.webhook"
}

echo_load="--clients 50 --in-flight 8"
run echo-off echo "$echo_load" --
run echo-webhook echo "$echo_load" -- --webhook http://127.0.0.1:19790/events --webhook-events message
run echo-nats echo "$echo_load" -- --nats-events message --nats-events-url nats://127.0.0.1:19791
up_load="--clients 32"
run upgrades-off upgrades "$up_load" --
run upgrades-hook upgrades "$up_load" -- --hook-connect http://127.0.0.1:19790/connect

python3 - "$out" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(name):
    r = json.loads((out / f"{name}.json").read_text())
    count = lambda kind: int(float((out / f"{name}.{kind}").read_text().strip() or 0))
    return r, count
rows = ["| run | per second | p99 | server CPU-µs each | forwarded or asked |", "|---|---:|---:|---:|---:|"]
for name, what in [("echo-off", "messages"), ("echo-webhook", "webhook"), ("echo-nats", "nats")]:
    r, count = load(name)
    sent = r["sent"]
    fwd = "-" if what == "messages" else "{:,} of {:,}".format(count(what), sent)
    rate = r["round_trips_per_second"] or r["deliveries_per_second"]
    rows.append("| {} | {:,.0f} msg/s | {} µs | {:.2f} | {} |".format(
        name, rate, r["latency"]["p99_us"], r["server"]["cpu_us_per_delivery"], fwd))
for name in ["upgrades-off", "upgrades-hook"]:
    r, count = load(name)
    u = r["upgrades"]
    asked = "{:,} of {:,}".format(count("hooks"), u["requests"]) if name.endswith("hook") else "-"
    rows.append("| {} | {:,.0f} upgrades/s | {} µs | {:.1f} | {} |".format(
        name, u["per_second"], r["latency"]["p99_us"], u["server_cpu_us_per_request"], asked))
text = "\n".join(rows) + "\n"
(out / "backend-cost.md").write_text(text)
print(text)
EOF
