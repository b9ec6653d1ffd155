#!/usr/bin/env bash
# Shard scaling: corecast (relay mode) with 1, 2, 4, ... shards, each shard count pinned to
# that many CPUs, loaded by corecast-load on CPUs of its own. For machines with many cores.
# Then a cluster run: CLUSTER_NODES nodes (default 4) of CPUS_PER_NODE CPUs each (default 2)
# joined through a nats-server, the clients spread over them (CLUSTER_NODES=0 skips it).
#   bench/scale.sh BIN_DIR OUT_DIR [SHARD_COUNTS] [LOAD_CPUS]
#   e.g. bench/scale.sh target/release /tmp/scale "1 2 4 8" 8-15
# Loopback only; every run is bounded by --duration.
set -euo pipefail
bin=${1:?binary folder with corecast and corecast-load}
out=${2:?output folder}
counts=${3:-"1 2 4 8"}
load_cpus=${4:-8-15}
mkdir -p "$out"
ulimit -l unlimited 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
first=${load_cpus%-*}; last=${load_cpus#*-}
cpus=$(seq -s, "$first" "$last")
threads=$((last - first + 1))
port=19500
for s in $counts; do
  port=$((port + 1))
  taskset -c "0-$((s - 1))" "$bin/corecast" --mode relay --listen "127.0.0.1:$port" --api-listen off \
    --send-queue-size 1024 --ping-interval 10s --client-message-rate 0 --client-byte-rate 0 2>"$out/server-$s.log" &
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  "$bin/corecast-load" broadcast --url "ws://127.0.0.1:$port/ws" --clients 10000 --messages 3000 \
    --in-flight 16 --duration 20s --threads "$threads" --cpus "$cpus" --server-pid "$pid" \
    --quiet --json "$out/broadcast-$s.json" | sed "s/^/[$s shards] /"
  "$bin/corecast-load" chat --url "ws://127.0.0.1:$port/ws" --clients 1000 --duration 8s \
    --threads "$threads" --cpus "$cpus" --server-pid "$pid" --quiet --json "$out/chat-$s.json" \
    | sed "s/^/[$s shards] /"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

nodes=${CLUSTER_NODES:-4}
per_node=${CPUS_PER_NODE:-2}
if [ "$nodes" -gt 0 ]; then
  nats_port=$((port + 100))
  nats-server -a 127.0.0.1 -p "$nats_port" 2>"$out/nats.log" &
  pids=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$nats_port) 2>/dev/null && break; sleep 0.1; done
  urls=""
  for n in $(seq 0 $((nodes - 1))); do
    port=$((port + 1))
    first_cpu=$((n * per_node))
    taskset -c "$first_cpu-$((first_cpu + per_node - 1))" "$bin/corecast" --mode relay \
      --listen "127.0.0.1:$port" --api-listen off --send-queue-size 1024 --ping-interval 10s \
      --client-message-rate 0 --client-byte-rate 0 --cluster "nats://127.0.0.1:$nats_port" --cluster-name scale --node-id "node-$n" \
      2>"$out/node-$n.log" &
    pids="$pids,$!"
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
  done
  "$bin/corecast-load" broadcast --url "$urls" --clients 10000 --messages 3000 \
    --in-flight 16 --duration 20s --threads "$threads" --cpus "$cpus" --server-pid "$pids" \
    --quiet --json "$out/cluster-$nodes-nodes.json" | sed "s/^/[$nodes nodes] /"
  kill ${pids//,/ }; wait 2>/dev/null || true
fi
