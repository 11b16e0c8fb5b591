package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

// What a hostile message is expected to come to: the documented behaviour the chaos run checks.
const (
	expectDeadLetter = "dead-lettered" // poison: decoded or validated and refused, with the reason
	expectIgnored    = "ignored"       // valid but refused by the run state or the learner, acked without effect
	expectSkipped    = "skipped"       // on the policy subject: readers pass over it to the last valid announcement
	expectKept       = "kept"          // published on a dead-letter subject: it is only a record
)

// hostile is one message the chaos run publishes on a subject of the run as an attacker on the
// bus would, and what became of it.
type hostile struct {
	Marker  string `json:"marker"` // in every copy of the message (worker id, prompt text, bytes)
	Subject string `json:"subject"`
	What    string `json:"what"`
	Expect  string `json:"expect"`
	// Outcome is what the run made of it, filled in at the end.
	Outcome string  `json:"outcome"`
	At      float64 `json:"at_seconds"`
	ok      bool
}

// hostileEnv is what hostile messages are built from: the run, its shape, and where it is now.
type hostileEnv struct {
	run    string
	steps  int
	g      int
	prompt prompts.Prompt
	state  runstate.State // the latest run state seen (zero before the first)
}

// hostileKind builds one kind of hostile message with marker m.
type hostileKind struct {
	kind   string // the subject after bicot.<run>.: a queue kind, events.<role>, policy or dead
	what   string
	expect string
	build  func(e hostileEnv, m string) (data []byte, header nats.Header)
}

func chaosJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// chaosGarbage is bytes no decoder accepts, carrying the marker.
func chaosGarbage(m string) []byte {
	b := []byte(m + " \x00\xff{\"v\":")
	for range 24 {
		b = append(b, byte(rand.IntN(256)))
	}
	return b
}

// chaosSample is a well-formed sample of prompt index p at step, marked as the worker that made it.
func chaosSample(e hostileEnv, step int64, p int, m string) bus.Sample {
	// No plan: what a run with max_plan_tokens 0 sends, so only the value under test is wrong.
	s := bus.Sample{V: bus.SchemaVersion, Run: e.run, Step: step, PromptIndex: p, SampleIndex: 0, G: e.g,
		PlanTokens: []int32{}, PlanLogp: []float32{}, Prompt: e.prompt, Worker: m}
	for i := range 16 {
		s.ImageTokens = append(s.ImageTokens, int32(i))
		s.ImageLogp = append(s.ImageLogp, -2)
	}
	return s
}

// farStep is a step the run never reaches: a message for it can never meet a real group.
func (e hostileEnv) farStep() int64 { return int64(e.steps) + 1000 }

// nearStep is a step the learner takes samples of (at most two ahead of it: pkg/learner
// maxStepsAhead) and is not past yet, under prompt index 0, which only step 0 dispatches: a
// sample for it reaches the learner's own checks.
func (e hostileEnv) nearStep() int64 { return e.state.Step + 2 }

// liveGroup is a group of the step being learned (a real key), or the far step's when none is known.
func (e hostileEnv) liveGroup() (int64, int) {
	for _, g := range e.state.GroupsByStatus(runstate.GroupDispatched) {
		return g.Step, int(g.PromptIndex)
	}
	return e.farStep(), 0
}

// hostileKinds is every hostile message the run is documented to survive without authentication
// (docs/wire.md, README "Hostile or broken input"). Forged messages that pass every check - a
// step_done that advances the step, a policy announcement of a new learner or of the last step,
// a scored sample or task with a real key and plausible values, a learner_resumed that rewinds -
// are not among them: only authentication keeps them out (see the README's failure model).
func hostileKinds() []hostileKind {
	task := func(e hostileEnv, m string, mod func(*bus.BatchTask)) []byte {
		p := e.prompt
		p.Prompt = m + " " + p.Prompt
		t := bus.BatchTask{V: bus.SchemaVersion, Run: e.run, Step: e.farStep(), G: e.g, Seed: 1,
			Prompts:  []bus.PromptRef{{Index: 0, Prompt: p}},
			Sampling: bus.SamplingParams{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 6}}
		mod(&t)
		return chaosJSON(t)
	}
	scored := func(e hostileEnv, step int64, p int, m string, mod func(*bus.ScoredSample)) []byte {
		s := bus.ScoredSample{Sample: chaosSample(e, step, p, m), Reward: 0.5, Scorer: m}
		mod(&s)
		return chaosJSON(s)
	}
	event := func(e hostileEnv, m string, mod func(*bus.Event)) []byte {
		ev := bus.Event{V: bus.SchemaVersion, Run: e.run, Worker: m, Role: bus.RoleLearner, Time: time.Now().UTC()}
		mod(&ev)
		return chaosJSON(ev)
	}
	return []hostileKind{
		{bus.KindTasks, "garbage bytes", expectDeadLetter, func(_ hostileEnv, m string) ([]byte, nats.Header) { return chaosGarbage(m), nil }},
		{bus.KindTasks, "task with group size 0", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return task(e, m, func(t *bus.BatchTask) { t.G = 0 }), nil
		}},
		{bus.KindTasks, "task with temperature 0 and a prompt index twice", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return task(e, m, func(t *bus.BatchTask) {
				t.Sampling.Temperature = 0
				t.Prompts = append(t.Prompts, t.Prompts[0])
			}), nil
		}},
		{bus.KindTasks, "task with a prompt outside the policy's vocabulary", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return task(e, m, func(t *bus.BatchTask) { t.Prompts[0].Prompt.Prompt = m + " a zeppelin over Reykjavik" }), nil
		}},
		{bus.KindTasks, "policy announcement misrouted to the task queue", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			h := nats.Header{}
			h.Set(bus.HeaderType, bus.TypePolicyAnnounce)
			return chaosJSON(bus.PolicyAnnounce{V: bus.SchemaVersion, Run: e.run, WeightsKey: m, SHA256: strings.Repeat("0", 64)}), h
		}},
		{bus.KindSamples, "garbage bytes", expectDeadLetter, func(_ hostileEnv, m string) ([]byte, nats.Header) { return chaosGarbage(m), nil }},
		{bus.KindSamples, "sample with a positive log-prob", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			step, p := e.liveGroup()
			s := chaosSample(e, step, p, m)
			s.ImageLogp[1] = 5
			return chaosJSON(s), nil
		}},
		{bus.KindSamples, "sample with an image token outside the codebook", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			s := chaosSample(e, e.farStep(), 0, m)
			s.ImageTokens[3] = 99999
			return chaosJSON(s), nil
		}},
		{bus.KindSamples, "sample with 3 image tokens instead of 16", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			s := chaosSample(e, e.farStep(), 0, m)
			s.ImageTokens, s.ImageLogp = s.ImageTokens[:3], s.ImageLogp[:3]
			return chaosJSON(s), nil
		}},
		{bus.KindScored, "garbage bytes", expectDeadLetter, func(_ hostileEnv, m string) ([]byte, nats.Header) { return chaosGarbage(m), nil }},
		{bus.KindScored, "reward 1e300 for a group being learned", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			step, p := e.liveGroup()
			return scored(e, step, p, m, func(s *bus.ScoredSample) { s.Reward = 1e300 }), nil
		}},
		{bus.KindScored, "expert reward -1e12 for a group being learned", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			step, p := e.liveGroup()
			return scored(e, step, p, m, func(s *bus.ScoredSample) { s.PerExpert = map[string]float64{"vqa": -1e12} }), nil
		}},
		{bus.KindScored, "log-prob -500 for a group being learned", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			step, p := e.liveGroup()
			return scored(e, step, p, m, func(s *bus.ScoredSample) { s.ImageLogp[0] = -500 }), nil
		}},
		{bus.KindScored, "scored sample with 5 image tokens", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return scored(e, e.nearStep(), 0, m, func(s *bus.ScoredSample) { s.ImageTokens, s.ImageLogp = s.ImageTokens[:5], s.ImageLogp[:5] }), nil
		}},
		{bus.KindScored, "scored sample of a group of 3 (the run's is 4)", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return scored(e, e.nearStep(), 0, m, func(s *bus.ScoredSample) { s.G = e.g - 1 }), nil
		}},
		{bus.KindScored, "valid scored sample of a step 1000 past the run's end", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return scored(e, e.farStep(), 0, m, func(*bus.ScoredSample) {}), nil
		}},
		{"events.reward", "garbage bytes", expectDeadLetter, func(_ hostileEnv, m string) ([]byte, nats.Header) { return chaosGarbage(m), nil }},
		{"events.learner", "step_done of another run", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) { ev.Run, ev.Kind, ev.Step = "someone-else", bus.EventStepDone, e.state.Step }), nil
		}},
		{"events.rollout", "event from role \"admin\"", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) { ev.Kind, ev.Role = bus.EventHeartbeat, "admin" }), nil
		}},
		{"events.learner", "learner_resumed with an undecodable resume point", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) { ev.Kind, ev.Message = bus.EventLearnerResumed, "{not json" }), nil
		}},
		{"events.learner", "step_resample of round 0", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) { ev.Kind, ev.Step, ev.Message = bus.EventStepResample, e.state.Step, `{"round":0}` }), nil
		}},
		{"events.learner", "step_resample asking for more prompts than a step has", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) {
				ev.Kind, ev.Step, ev.Message = bus.EventStepResample, e.state.Step, `{"round":1,"count":100000}`
			}), nil
		}},
		{"events.learner", "step_done of the current step that does not advance the policy version", expectIgnored, func(e hostileEnv, m string) ([]byte, nats.Header) {
			// Strictly on-policy the version equals the step, so this never advances it; a policy
			// version of 0 would (StepDone reads it as "the next one"): not before version 1.
			step, pv := e.state.Step, e.state.PolicyVersion
			if pv < 1 {
				step, pv = e.farStep(), e.farStep()
			}
			return event(e, m, func(ev *bus.Event) {
				ev.Kind, ev.Step, ev.PolicyVersion = bus.EventStepDone, step, pv
				ev.Message = string(chaosJSON(bus.StepReport{Learned: []string{runstate.GroupKey(step, 0)}}))
			}), nil
		}},
		{"events.learner", "step_done of a step the run has not reached", expectIgnored, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) {
				ev.Kind, ev.Step, ev.PolicyVersion, ev.Message = bus.EventStepDone, e.farStep(), e.farStep()+1, `{"learned":[]}`
			}), nil
		}},
		{"events.learner", "group_complete of groups never dispatched", expectIgnored, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) {
				ev.Kind, ev.Step, ev.Message = bus.EventGroupComplete, e.farStep(), runstate.GroupKey(e.farStep(), 3)
			}), nil
		}},
		// A step_done that would advance the run, sent by a rollout worker on its own subject, and
		// by someone claiming the learner's role on the rollout subject: only the learner's subject
		// carries step reports (bus.Event.CheckSender).
		{"events.rollout", "step_done that advances the step, from a rollout worker", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) {
				ev.Role, ev.Kind, ev.Step, ev.PolicyVersion, ev.Message = bus.RoleRollout, bus.EventStepDone, e.state.Step, e.state.PolicyVersion+1, `{"learned":[]}`
			}), nil
		}},
		{"events.rollout", "step_done that advances the step, claiming the learner's role on the rollout subject", expectDeadLetter, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return event(e, m, func(ev *bus.Event) {
				ev.Kind, ev.Step, ev.PolicyVersion, ev.Message = bus.EventStepDone, e.state.Step, e.state.PolicyVersion+1, `{"learned":[]}`
			}), nil
		}},
		{"policy", "garbage bytes", expectSkipped, func(_ hostileEnv, m string) ([]byte, nats.Header) { return chaosGarbage(m), nil }},
		{"policy", "announcement of the last step with a malformed digest", expectSkipped, func(e hostileEnv, m string) ([]byte, nats.Header) {
			return chaosJSON(bus.PolicyAnnounce{V: bus.SchemaVersion, Run: e.run, Version: int64(e.steps) + 7, Step: int64(e.steps) + 7,
				WeightsKey: m, SHA256: "not-a-digest", Learner: m}), nil
		}},
		{"dead", "garbage bytes on the task queue's dead-letter subject", expectKept, func(_ hostileEnv, m string) ([]byte, nats.Header) {
			return chaosGarbage(m), nil
		}},
	}
}

// hostilePublisher publishes hostile messages on every subject of the run, one every few
// seconds, in a shuffled cycle through hostileKinds.
type hostilePublisher struct {
	js    jetstream.JetStream
	topo  bus.Topology
	env   func() hostileEnv
	start time.Time

	mu   sync.Mutex
	sent []*hostile
	n    int
}

func (h *hostilePublisher) subject(kind string) string {
	switch kind {
	case "policy":
		return h.topo.PolicySubject
	case "dead":
		return h.topo.Tasks.DeadSubject
	}
	return bus.Subject(h.topo.Run, kind)
}

// run publishes one message of every kind at once, then one every minGap to maxGap until ctx
// ends.
func (h *hostilePublisher) run(ctx context.Context, minGap, maxGap time.Duration) {
	kinds := hostileKinds()
	for _, i := range rand.Perm(len(kinds)) {
		h.publish(ctx, kinds[i])
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	var order []int
	lastPolicy := time.Now()
	for {
		gap := minGap + time.Duration(rand.Int64N(int64(maxGap-minGap)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
		if len(order) == 0 {
			order = rand.Perm(len(kinds))
		}
		k := kinds[order[0]]
		order = order[1:]
		// The policy stream keeps the last bus.PolicyHistory messages and readers look back that
		// far for a valid one: spacing policy garbage out keeps it inside what is documented.
		if k.kind == "policy" && time.Since(lastPolicy) < 20*time.Second {
			continue
		}
		h.publish(ctx, k)
		if k.kind == "policy" {
			lastPolicy = time.Now()
		}
	}
}

func (h *hostilePublisher) publish(ctx context.Context, k hostileKind) {
	h.mu.Lock()
	h.n++
	m := fmt.Sprintf("chaos-hostile-%04d", h.n)
	h.mu.Unlock()
	data, hdr := k.build(h.env(), m)
	msg := &nats.Msg{Subject: h.subject(k.kind), Data: data, Header: hdr}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := h.js.PublishMsg(pctx, msg)
	cancel()
	if err != nil {
		// The server may be down (an outage of the run): that message never existed.
		return
	}
	h.mu.Lock()
	h.sent = append(h.sent, &hostile{Marker: m, Subject: msg.Subject, What: k.what, Expect: k.expect,
		At: time.Since(h.start).Seconds(), ok: true})
	h.mu.Unlock()
}

func (h *hostilePublisher) published() []*hostile {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*hostile(nil), h.sent...)
}
