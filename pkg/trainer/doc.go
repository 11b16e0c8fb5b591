// Package trainer is the learner's BiCoT-GRPO update on the policy (T2I-R1): it
// takes complete groups of scored samples (the G rollouts of one prompt with their rewards, as
// they arrive over the bus), turns rewards into group-relative advantages, rebuilds each sample's
// token sequence in the policy's layout, and applies one AdamW update of the per-token loss
// -(r*A - beta*KL) over plan (semantic-level CoT) and image (token-level CoT) tokens.
//
// How it fits: rollout workers sample with pkg/model and publish bus.Sample messages (wire.FromSample
// fills their token and log-prob fields, so the learner reads back exactly what was sampled);
// reward workers add rewards; the learner role collects complete groups (bus.Collector) and calls
// Trainer.Step once per batch; after each step it distributes Trainer.Weights under the new
// Trainer.Version and checkpoints Trainer.Save for exact resume. The math lives in pkg/grpo and
// the network in pkg/model; this package joins them with the wire format.
//
// Three choices matter for correctness:
//
//   - logp_old is the log-probability recorded at sampling time (with the guidance weight and
//     temperature the rollout used), never a recomputation: scoring without guidance what was
//     sampled with it is the reference code's known flaw. With one update per batch and fresh
//     samples the ratio is therefore 1 up to float rounding.
//   - Every step runs at one fixed batch shape (Options.BatchSize sequences, zero-mask rows as
//     padding), so the train graph and the reference scorer compile once.
//   - A sample older than the staleness bound is refused with a *StaleError naming it; the caller
//     drops it (or its group) and retries. Partial groups are always refused.
package trainer
