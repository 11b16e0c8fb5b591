package bus

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func scored(step int64, prompt, idx, g int, r float64) ScoredSample {
	s := sample(step, prompt, idx)
	s.G = g
	return ScoredSample{Sample: s, Reward: r}
}

func TestCollectorReleasesOnlyCompleteGroups(t *testing.T) {
	c := NewCollector("run1")
	for _, idx := range []int{2, 0} {
		g, dup, err := c.Add(scored(1, 7, idx, 3, float64(idx)))
		if g != nil || dup || err != nil {
			t.Fatalf("partial group released: %v %v %v", g, dup, err)
		}
	}
	if _, dup, _ := c.Add(scored(1, 7, 2, 3, 99)); !dup {
		t.Fatal("duplicate sample not reported")
	}
	if m := c.Missing(); len(m) != 1 || len(m[GroupKey{1, 7}]) != 1 || m[GroupKey{1, 7}][0] != 1 {
		t.Fatalf("missing = %v, want sample 1 of (1,7)", m)
	}
	g, dup, err := c.Add(scored(1, 7, 1, 3, 1))
	if err != nil || dup || g == nil {
		t.Fatalf("complete group not released: %v %v %v", g, dup, err)
	}
	if r := g.Rewards(); len(r) != 3 || r[0] != 0 || r[1] != 1 || r[2] != 2 {
		t.Fatalf("rewards %v: want sample order and the first copy of sample 2", r)
	}
	if _, dup, _ := c.Add(scored(1, 7, 0, 3, 0)); !dup {
		t.Fatal("sample of a completed group not reported duplicate")
	}
	if len(c.Missing()) != 0 {
		t.Fatal("completed group still missing samples")
	}
	c.Forget(2)
	if _, dup, _ := c.Add(scored(1, 7, 0, 3, 0)); dup {
		t.Fatal("Forget kept state")
	}
}

func TestCollectorErrors(t *testing.T) {
	c := NewCollector("run1")
	s := scored(1, 0, 0, 2, 0)
	s.Run = "other"
	if _, _, err := c.Add(s); err == nil || !strings.Contains(err.Error(), "run other") {
		t.Fatalf("other run: %v", err)
	}
	if _, _, err := c.Add(scored(1, 0, 0, 2, 0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Add(scored(1, 0, 1, 3, 0)); err == nil || !strings.Contains(err.Error(), "group size 3") {
		t.Fatalf("group size mismatch: %v", err)
	}
}

func TestCollectorConcurrent(t *testing.T) {
	c := NewCollector("run1")
	const G, prompts = 8, 5
	var mu sync.Mutex
	released := 0
	var wg sync.WaitGroup
	for w := range 4 { // every sample delivered by 4 fetchers at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range prompts {
				for i := range G {
					g, _, err := c.Add(scored(3, p, (i+w)%G, G, 0))
					if err != nil {
						t.Error(err)
					}
					if g != nil {
						mu.Lock()
						released++
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	if released != prompts {
		t.Fatalf("released %d groups, want %d (each exactly once)", released, prompts)
	}
}

// A collector holds at most MaxPartial incomplete groups: a sample that would start one more is
// refused with ErrCollectorFull (retried later), while samples of held groups still complete them.
func TestCollectorBound(t *testing.T) {
	c := NewCollector("run1")
	c.MaxPartial = 2
	for p := range 2 {
		if _, _, err := c.Add(scored(1, p, 0, 2, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Add(scored(1, 9, 0, 2, 0)); !errors.Is(err, ErrCollectorFull) {
		t.Fatalf("a third incomplete group: %v, want ErrCollectorFull", err)
	}
	if g, _, err := c.Add(scored(1, 0, 1, 2, 0)); err != nil || g == nil {
		t.Fatalf("completing a held group: %v %v", g, err)
	}
	if _, _, err := c.Add(scored(1, 9, 0, 2, 0)); err != nil {
		t.Fatalf("after a group completed: %v", err)
	}
}
