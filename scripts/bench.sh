#!/usr/bin/env bash
# bench.sh: the performance benchmarks of the orchestrator, as one table (README "Performance").
# It runs, each once (-benchtime 1x; each measures a fixed amount of work):
#   pkg/bench      orchestration overhead against the same compute called directly, scaling with
#                  simulated compute at 1-64 workers, async (staleness 1, 2) vs sync
#   pkg/rewardworker  reward batching;  pkg/model  sampling (KV cache, full forward, CFG off)
#   pkg/store/s3   checkpoint upload vs raw PutObject (versitygw, installed into .tools/bin)
#   pkg/runstate   raft failover (20 elections) and apply throughput;  pkg/bus  message latency
# and prints the Markdown table; the raw results and the table go to results/bench/<date>.json
# (or the file given as the first argument). Takes 6-11 minutes on 2 cores; needs a quiet
# machine for figures worth keeping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${1:-results/bench/$(date -u +%Y%m%dT%H%M%SZ).json}"
scripts/s3server.sh install
export BICOT_VERSITYGW="${BICOT_VERSITYGW:-$(scripts/s3server.sh path)}"
raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
run() { go test -run '^$' -benchtime 1x -timeout 30m "$@" | tee -a "$raw"; }
run -bench 'Overhead|Scaling|Async' ./pkg/bench
run -bench 'RewardBatching' ./pkg/rewardworker
run -benchtime 3x -bench 'Sample(KVCache|NoCFG)$' ./pkg/model
run -bench 'SampleFullForward$' ./pkg/model
run -benchtime 5x -bench 'CheckpointUpload|RawPutObject' ./pkg/store/s3
run -bench 'Failover|ApplyThree' ./pkg/runstate
run -bench 'SampleLatency|PolicyFanout' ./pkg/bus
echo
go run ./scripts/benchtable -out "$out" -command "scripts/bench.sh $*" < "$raw"
echo "bench.sh: results in $out"
