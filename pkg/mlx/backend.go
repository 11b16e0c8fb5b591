// Package mlx is the one place where the project talks to gomlx v0.26 below the model level: it
// creates the compute backend and holds the graph building blocks that work around that version's
// problems on the pure-Go backend:
//
//   - Backend selection. The pure-Go backend ("go") with the default parallelism deadlocks on
//     2-CPU machines, so the default configuration is "go:parallelism=-1,ops_sequential": graph
//     ops run one after another (matrix multiplies still use the worker pool), because v0.26's
//     parallel op scheduler races on buffer reuse (the race detector finds it in exec.go), which
//     could silently corrupt results and break bit-exact resume. The XLA backend (GPU
//     nodes, "xla:cuda") is compiled in only with the build tag `xla` (see backend_xla.go), because
//     it needs cgo and the PJRT plugin.
//   - Matrix-multiply gradients. v0.26 differentiates DotGeneral as broadcast-multiply + sum, which
//     materialises [batch, m, k, n] tensors (GBs and 10x slower backward passes). BatchMatMul
//     injects the two-matmul gradient with IdentityWithCustomGradient; Dense and
//     CausalSelfAttention are built on it and must be used for every 2-D/3-D projection.
//   - Missing ops. The pure-Go backend has no Pad, DynamicSlice, DynamicUpdateSlice or Reverse:
//     Slice has no gradient there, so GatherAxis selects along an axis with Gather (whose gradient
//     is ScatterSum); caches are written with Where on a one-hot position mask (OneHotMask).
//
// Everything else (layer norm, embeddings, optimizers) is used from gomlx directly.
package mlx

import (
	"fmt"
	"os"
	"strings"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // registers the pure-Go backend "go"
)

// DefaultBackendConfig is the pure-Go backend with parallelism that does not deadlock on small
// machines and sequential op scheduling, which is race-free (see the package comment).
const DefaultBackendConfig = "go:parallelism=-1,ops_sequential"

// BackendEnvVar overrides the backend configuration when no explicit one is given.
const BackendEnvVar = "BICOT_BACKEND"

// NewBackend creates the compute backend. An empty config falls back to $BICOT_BACKEND and then
// to DefaultBackendConfig. Configurations name a compiled-in backend: "go[:options]" always,
// "xla:cuda" / "xla:cpu" only in binaries built with `-tags xla`.
func NewBackend(config string) (b backends.Backend, err error) {
	if config == "" {
		config = os.Getenv(BackendEnvVar)
	}
	if config == "" {
		config = DefaultBackendConfig
	}
	name, _, _ := strings.Cut(config, ":")
	if !contains(backends.List(), name) {
		return nil, fmt.Errorf("backend %q: not compiled in (available: %s; the xla backend needs `-tags xla`)",
			config, strings.Join(backends.List(), ", "))
	}
	// gomlx reports some configuration problems by panicking.
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("backend %q: %v", config, r)
		}
	}()
	b, err = backends.NewWithConfig(config)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", config, err)
	}
	return b, nil
}

// IsGoBackend reports whether b is the pure-Go backend, whose graphs run their ops one after
// another (callers then get more from running independent work concurrently).
func IsGoBackend(b backends.Backend) bool {
	return b != nil && b.String() == "go" // Name() is "SimpleGo (go)"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
