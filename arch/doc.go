// Package arch holds no code: its tests check the repository's layering (docs/architecture.md).
//
//   - Each role is one package named like its binary (pkg/coordinator, pkg/rolloutworker,
//     pkg/rewardworker, pkg/learner) with one constructor, New(ctx, Deps, config.Config).
//   - A role imports no other role; only the binaries, laptop mode (pkg/local), the orchestration
//     benchmarks (pkg/bench, laptop mode with simulated compute) and the end-to-end tests (e2e/)
//     import roles, and the binaries and laptop mode build every role with
//     that same constructor, so the two cannot drift apart.
//   - The run config (pkg/config) imports no transport and no store backend.
//   - The worker binaries link no raft, no nats-server and no trainer.
package arch
