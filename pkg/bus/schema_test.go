package bus

import (
	"math"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

func TestValidateRunID(t *testing.T) {
	for _, ok := range []string{"r", "run-2026_11", strings.Repeat("a", 64)} {
		if err := config.ValidateRunID(ok); err != nil {
			t.Errorf("ValidateRunID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", strings.Repeat("a", 65)} {
		if err := config.ValidateRunID(bad); err == nil {
			t.Errorf("ValidateRunID(%q) accepted", bad)
		}
	}
}

func TestSampleValidation(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Sample)
		want string
	}{
		{"no version", func(s *Sample) { s.V = 0 }, "schema version"},
		{"newer version", func(s *Sample) { s.V = SchemaVersion + 1 }, "newer"},
		{"bad run", func(s *Sample) { s.Run = "a.b" }, "run id"},
		{"index outside group", func(s *Sample) { s.SampleIndex = 4 }, "outside group"},
		{"plan logp length", func(s *Sample) { s.PlanLogp = s.PlanLogp[:2] }, "plan log-probs"},
		{"plan len too long", func(s *Sample) { s.PlanLen = 5 }, "plan_len"},
		{"image logp length", func(s *Sample) { s.ImageLogp = s.ImageLogp[:1] }, "image log-probs"},
		{"no image", func(s *Sample) { s.ImageTokens, s.ImageLogp = nil, nil }, "no image tokens"},
		{"nan image logp", func(s *Sample) { s.ImageLogp[2] = float32(math.NaN()) }, "image_logp: entry 2 is NaN"},
		{"inf plan logp", func(s *Sample) { s.PlanLogp[1] = float32(math.Inf(-1)) }, "plan_logp: entry 1 is -Inf"},
		{"positive logp", func(s *Sample) { s.ImageLogp[0] = 0.5 }, "not a log-probability"},
		{"negative token", func(s *Sample) { s.ImageTokens[0] = -1 }, "negative"},
		{"empty prompt", func(s *Sample) { s.Prompt.Prompt = " " }, "empty prompt"},
		{"not png", func(s *Sample) { s.PNG = []byte("GIF89a") }, "not a PNG"},
	}
	base := sample(1, 2, 3)
	base.V = SchemaVersion
	if err := base.Validate(); err != nil {
		t.Fatalf("valid sample rejected: %v", err)
	}
	for _, c := range cases {
		s := sample(1, 2, 3)
		s.V = SchemaVersion
		c.edit(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
		if err != nil && c.name != "bad run" && !strings.Contains(err.Error(), s.Key()) && !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: error %v does not name the sample", c.name, err)
		}
	}
	// Padding after PlanLen is not checked: it is never scored.
	s := sample(1, 2, 3)
	s.V = SchemaVersion
	s.PlanLogp[3] = float32(math.NaN())
	if err := s.Validate(); err != nil {
		t.Errorf("NaN in plan padding rejected: %v", err)
	}
}

func TestScoredValidation(t *testing.T) {
	s := ScoredSample{Sample: sample(1, 0, 0), Reward: 1.5, PerExpert: map[string]float64{"det": 1, "vqa": 0.5}}
	s.V = SchemaVersion
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.PerExpert["vqa"] = math.NaN()
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), `expert "vqa"`) {
		t.Fatalf("NaN expert: %v", err)
	}
	s.PerExpert["vqa"] = 0
	s.Reward = math.Inf(-1)
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "reward is -Inf") {
		t.Fatalf("Inf reward: %v", err)
	}
}

func TestTaskValidation(t *testing.T) {
	cases := []struct {
		name string
		edit func(*BatchTask)
		want string
	}{
		{"g zero", func(b *BatchTask) { b.G = 0 }, "group size"},
		{"no prompts", func(b *BatchTask) { b.Prompts = nil }, "0 prompts"},
		{"dup index", func(b *BatchTask) { b.Prompts[1].Index = b.Prompts[0].Index }, "appears twice"},
		{"empty prompt", func(b *BatchTask) { b.Prompts[1].Prompt.Prompt = "" }, "empty prompt"},
		{"temperature", func(b *BatchTask) { b.Sampling.Temperature = 0 }, "temperature"},
		{"cfg nan", func(b *BatchTask) { b.Sampling.CFGWeight = math.NaN() }, "cfg_weight"},
	}
	for _, c := range cases {
		b := task(1, 0)
		b.V = SchemaVersion
		c.edit(&b)
		if err := b.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	a, b := task(1, 0), task(1, 0)
	b.Attempt = 1
	if a.MsgID() == b.MsgID() {
		t.Error("re-dispatch shares the original's message id")
	}
}

func TestPolicyAnnounceValidation(t *testing.T) {
	p := PolicyAnnounce{V: 1, Run: "r", Version: 1, WeightsKey: "k", SHA256: strings.Repeat("0", 64)}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.SHA256 = "abc"
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("short sha: %v", err)
	}
}

// Tasks and samples naming absurd sizes are refused before anyone allocates for them.
func TestSizesAreBounded(t *testing.T) {
	p := prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color}
	task := BatchTask{V: SchemaVersion, Run: "r", Step: 0, G: config.MaxGroupSize + 1, Prompts: []PromptRef{{Index: 0, Prompt: p}},
		Sampling: SamplingParams{Temperature: 1}}
	if err := task.Validate(); err == nil || !strings.Contains(err.Error(), "group size") {
		t.Errorf("g %d: %v", task.G, err)
	}
	task.G = 2
	task.Prompts = make([]PromptRef, config.MaxPromptsPerTask+1)
	for i := range task.Prompts {
		task.Prompts[i] = PromptRef{Index: i, Prompt: p}
	}
	if err := task.Validate(); err == nil || !strings.Contains(err.Error(), "prompts, want") {
		t.Errorf("%d prompts: %v", len(task.Prompts), err)
	}
	task.Prompts = task.Prompts[:2]
	if err := task.Validate(); err != nil {
		t.Errorf("a task of 2 prompts x 2: %v", err)
	}
	ev := Event{V: SchemaVersion, Run: "r", Kind: EventHeartbeat, Role: RoleRollout, Worker: strings.Repeat("w", MaxWorkerID+1)}
	if err := ev.Validate(); err == nil || !strings.Contains(err.Error(), "worker id") {
		t.Errorf("a worker id of %d bytes: %v", len(ev.Worker), err)
	}
}
