package local

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/dashboard/browsertest"
)

// TestDashboardInChromium opens the coordinator's dashboard in a headless Chromium while a laptop
// run learns, and checks after the last step, without reloading, that the page caught up by
// itself: the run's name and state, a point per step on every chart line, the kept steps (0 and
// 2 of 3 with samples_every 2) and every sample image of the last one decoded, with no console
// error and no failed request on the way.
func TestDashboardInChromium(t *testing.T) {
	b := browsertest.New(t)
	c := testConfig(t, 3)
	c.SamplesEvery = 2
	e := testEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := Start(ctx, Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, SkipEval: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	b.Open(t, "http://"+cl.Coordinator.Addr()+"/")
	b.WaitFor(t, `document.getElementById('run-state').textContent !== 'loading'`, `document.body.innerText.slice(0, 300)`, 30*time.Second)
	first := browsertest.Eval[string](t, b, `document.getElementById('run-state').textContent + ', ' +
		document.querySelectorAll('#chart-reward path.line').length + ' reward lines'`)
	t.Logf("dashboard at its first answer: %s", first)
	wait(t, cl)
	b.Check(t, browsertest.Want{Run: c.RunID, Steps: c.Steps, SampleSteps: []int64{0, 2}, Images: c.PromptsPerStep * c.GroupSize})
	// The state comes from the status poll, which may answer after the charts' last refresh.
	b.WaitFor(t, `document.getElementById('run-state').textContent === 'done'`, `document.getElementById('run-state').textContent`, 30*time.Second)
	// Another kept step, chosen in the browser, shows its own samples.
	browsertest.Eval[bool](t, b, `(() => { const s = document.getElementById('sample-step'); s.value = '0';
		s.dispatchEvent(new Event('change')); return true; })()`)
	b.WaitFor(t, `(() => { const im = [...document.querySelectorAll('#samples img')];
		return im.length > 0 && im.every(i => i.src.includes('/v1/samples/0/') && i.complete && i.naturalWidth > 0); })()`,
		`[...document.querySelectorAll('#samples img')].map(i => i.src).join(' ')`, 30*time.Second)
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("browser problems after choosing step 0: %q", p)
	}
}
