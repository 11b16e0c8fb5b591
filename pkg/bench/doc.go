// Package bench measures the orchestrator itself: how much of a step the bus, raft and the store
// cost beside the model's compute, how throughput scales with workers, and what asynchronous
// steps buy. The model's compute is either real (RunOverhead, which compares a laptop-mode run with
// the same compute called directly) or simulated (RunSimulated: rollout, reward and learner
// compute replaced by calibrated sleeps through rolloutworker.Sampler, a reward Scorer and
// trainer.Trainer.StepSimulated, so 64 workers of each kind fit on two cores while the real
// coordinator, NATS server, store and learner bookkeeping run).
//
// The measurements are Go benchmarks (bench_test.go here and in the packages they measure);
// scripts/bench.sh runs them all and scripts/benchtable turns their output into the
// README's table and results/bench/*.json.
package bench
