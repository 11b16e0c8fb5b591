#!/usr/bin/env bash
# Runs the ladder of BiCoT-GRPO experiments (configs/ladder/*.yaml, or the rungs named) with the
# same training-time budget each, evaluates the base policy once on the same held-out prompts,
# and prints the results table (learner results).
#
#   scripts/ladder.sh [-b BUDGET] [-l EVAL_LIMIT] [-j JOBS] [-o OUTDIR] [RUNG ...]
#
# BUDGET is training time per rung (default 30m), EVAL_LIMIT held-out prompts per task type
# (default 0: the whole eval set, 1,080 prompts x G 4), JOBS rungs at once (default: one per two
# cores; a rung's sampling and update run one op at a time, so one core each is enough where
# there are many). Rungs are names of configs/ladder/*.yaml without the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=30m limit=0 out=results/ladder jobs=$(( ($(nproc) + 1) / 2 ))
while getopts "b:l:j:o:" opt; do
	case $opt in
	b) budget=$OPTARG ;;
	l) limit=$OPTARG ;;
	j) jobs=$OPTARG ;;
	o) out=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
rungs=("$@")
if [ ${#rungs[@]} -eq 0 ]; then
	for f in configs/ladder/*.yaml; do
		n=$(basename "$f" .yaml)
		case $n in experts-*) continue ;; esac
		rungs+=("$n")
	done
fi
bin=${BICOT_LEARNER:-}
if [ -z "$bin" ]; then
	mkdir -p .tools/bin
	go build -o .tools/bin/learner ./learner
	bin=.tools/bin/learner
fi
mkdir -p "$out"
export GOMAXPROCS=${GOMAXPROCS:-2}
run() {
	case $1 in
	base) "$bin" eval --limit "$limit" --json "$out/base.json" >"$out/base.log" 2>&1 ;;
	base-no-plan) "$bin" eval --no-plan --limit "$limit" --json "$out/base-no-plan.json" >"$out/base-no-plan.log" 2>&1 ;;
	*) "$bin" experiment --config "configs/ladder/$1.yaml" --budget "$budget" --eval-every 0 --eval-limit "$limit" \
		--no-initial-eval --out "$out/$1.jsonl" >"$out/$1.log" 2>&1 ;;
	esac
	echo "done: $1"
}
export -f run
export bin out budget limit
printf '%s\n' base base-no-plan "${rungs[@]}" | xargs -P "$jobs" -I{} bash -c 'run {}'
"$bin" results "$out" | tee "$out/table.md"
