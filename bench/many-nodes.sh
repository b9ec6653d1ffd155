#!/usr/bin/env bash
# Many processes on one machine: one nats-server, NODES corecast nodes in cluster mode
# (--mode pubsub --shards 1, the binary's defaults otherwise) and one corecast-load listen
# generator per node, every process under the 20,000-file limit, 127.0.0.1 only, ports found
# at run time. It holds every connection for --duration, sends a broadcast and a publication
# through one node's API every --every (and once at the end), checks that every client got
# every one exactly once and in order, and writes bench/results/<date>-many-nodes.{json,md}.
# Exit status 1 when a client was dropped or a delivery missing.
#   bench/many-nodes.sh                                   # 4 nodes × 15,000 clients, 10 minutes
#   bench/many-nodes.sh --clients 2000 --duration 60s     # a short run
#   DURATION=2m bench/many-nodes.sh                       # the same knob from the environment
# Other flags go to corecast-many-nodes (--nodes, --every, --progress, --topic, --out, --logs;
# --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nats-server >/dev/null || {
  echo "bench/many-nodes.sh: nats-server is missing (apt-get install nats-server)" >&2
  exit 2
}
# io_uring locks a little memory per executor: every node and generator has one.
ulimit -l unlimited 2>/dev/null || true
# The per-process open-file limit of this machine, 20,000; every child inherits it.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p corecast-bin -p corecast-load
args=()
[ -n "${DURATION:-}" ] && args+=(--duration "$DURATION")
[ -n "${NODES:-}" ] && args+=(--nodes "$NODES")
[ -n "${CLIENTS:-}" ] && args+=(--clients "$CLIENTS")
exec target/release/corecast-many-nodes "${args[@]}" "$@"
