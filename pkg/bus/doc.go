// Package bus is the data plane of a training run: NATS JetStream work queues that carry prompt
// batches from the coordinator to rollout workers, samples to reward workers and scored samples to
// the learner, plus a dead-letter stream, a policy-version announcement that late joiners can read,
// and a progress/events stream for the coordinator (report.go: the Reporter workers use, the
// event kinds and RunEnded). docs/wire.md describes the streams, subjects,
// message schema and delivery semantics; this package is their only implementation. It is the
// client side only: the embedded server is pkg/natsd.
//
// Delivery is at-least-once: a worker acks a message only after its own output is published (and
// acknowledged by JetStream), unacked work comes back after AckWait, and every publish carries a
// Nats-Msg-Id derived from (run, step, prompt, sample) so JetStream drops duplicates within its
// de-duplication window; consumers (the learner) still de-duplicate by key.
package bus
