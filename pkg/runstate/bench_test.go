package runstate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkApply measures committed heartbeats per second on a single durable node, one at a time
// and from 8 x GOMAXPROCS concurrent proposers (BatchApplyCh batches those into fewer disk writes).
func BenchmarkApply(b *testing.B) {
	n, err := Open(NodeConfig{ID: "bench", RaftAddr: "127.0.0.1:0", DataDir: b.TempDir(), Bootstrap: true}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown()
	for !n.IsLeader() {
		time.Sleep(5 * time.Millisecond)
	}
	ctx := context.Background()
	hb := func(i int) Command {
		return NewHeartbeat(t0, Heartbeat{WorkerID: fmt.Sprintf("w%d", i%64), Role: "rollout", TTL: time.Minute})
	}
	b.Run("sequential", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := n.Apply(ctx, hb(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("concurrent", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := n.Apply(ctx, hb(i)); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
