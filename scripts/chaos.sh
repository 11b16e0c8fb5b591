#!/usr/bin/env bash
# chaos.sh: the chaos suite's full run (TestChaos in e2e/chaos_test.go with BICOT_CHAOS_DURATION).
# It builds the four binaries and runs one training run as separate processes on loopback - a NATS
# server, three raft coordinators, a learner checkpointing to a local S3 server (versitygw), rollout
# and reward workers - while it kills a worker every few seconds, the learner mid-step and during a
# checkpoint upload, the raft leader, the NATS server (5 s) and the S3 server (30 s), in rounds for
# the whole duration, and publishes hostile messages on every subject of the run. Then it lets the
# run learn a few steps without faults and stops every process with SIGTERM. It checks that no
# group of the steps learned was lost or learned twice, that no step stalled and that every process
# not killed exited 0, prints the report, and copies its JSON to results/chaos/ (or --out). It
# exits non-zero when the run failed any check, and then keeps every process's log next to the
# report.
#
# It takes the duration plus about half a minute (building, models, stopping): about 10.5 minutes
# with the default 10m on 2 cores. The short variant of the same test, which runs to the run's own
# end, is part of the normal suite (`go test ./e2e -run Chaos`, about a minute and a half).
#
#   scripts/chaos.sh [--duration 10m] [--out results/chaos]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=10m
out=results/chaos
while [[ $# -gt 0 ]]; do
	case "$1" in
	--duration) duration="$2"; shift 2 ;;
	--duration=*) duration="${1#*=}"; shift ;;
	--out) out="$2"; shift 2 ;;
	--out=*) out="${1#*=}"; shift ;;
	-h | --help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "usage: $0 [--duration 10m] [--out DIR]" >&2; exit 2 ;;
	esac
done

# The S3 server is a real one: installed into the git-ignored .tools/bin when missing.
scripts/s3server.sh install
export BICOT_VERSITYGW="${BICOT_VERSITYGW:-$(scripts/s3server.sh path)}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
status=0
# The test bounds itself (twice the duration plus 10 minutes); go test's own limit stays out of
# its way.
mkdir -p "$tmp/logs"
BICOT_CHAOS_DURATION="$duration" BICOT_CHAOS_REPORT="$tmp/report.json" BICOT_CHAOS_LOGS="$tmp/logs" \
	go test ./e2e -run '^TestChaos$' -count=1 -v -timeout 6h || status=$?
stamp="chaos-$(date -u +%Y%m%dT%H%M%SZ)-$duration"
if [[ -f "$tmp/report.json" ]]; then
	cp "$tmp/report.json" "$out/$stamp.json"
	echo "chaos report: $out/$stamp.json"
fi
if [[ "$status" -ne 0 ]]; then
	# Every process's log, for the post-mortem (not meant to be committed).
	cp -r "$tmp/logs" "$out/$stamp-logs"
	echo "process logs: $out/$stamp-logs" >&2
fi
exit "$status"
