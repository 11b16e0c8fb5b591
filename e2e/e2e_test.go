// Package e2e holds the tests that run the system the way operators do, across processes,
// failures and restarts: the four binaries as separate OS processes with a coordinator killed
// mid-run (multiprocess_test.go), three coordinators surviving the loss of their leader
// (failover_test.go), and runs resumed after a kill that continue exactly (resume_test.go).
package e2e

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/local/localtest"
)

// sharedEnv is the models every test here runs with, built once for the test binary.
var sharedEnv localtest.Shared

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// An apply raft accepted just before it shut down is never answered (runstate.Node.await).
		goleak.IgnoreAnyFunction("github.com/bicot-rl/bicot/pkg/runstate.(*Node).await.func1"),
		// gomlx's pure-Go backend keeps worker goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreTopFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreCurrent())
}
