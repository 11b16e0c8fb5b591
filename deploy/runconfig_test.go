package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// runConfigPathKeys are the run config keys that name files the roles read in a cluster run
// (docs/pipeline.md, "Run config"). The deploy configs set each explicitly, so that what the
// image must hold can be read off them.
var runConfigPathKeys = []string{"prompts", "pretrain_prompts", "policy_init", "codebook", "experts"}

// runConfigPaths returns the file paths a run config names, failing on a missing key or an
// absolute path (the image holds them under its working directory).
func runConfigPaths(t testing.TB, where string, b []byte) map[string]string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	out := map[string]string{}
	for _, k := range runConfigPathKeys {
		p, _ := m[k].(string)
		if p == "" {
			t.Errorf("%s: set %s explicitly", where, k)
			continue
		}
		if filepath.IsAbs(p) {
			t.Errorf("%s: %s %s: want a path relative to the image's working directory", where, k, p)
			continue
		}
		out[k] = p
	}
	return out
}

// runConfig reads the keys of a run config these tests look at.
func runConfig(t testing.TB, where string, b []byte) (runID, store string) {
	t.Helper()
	var m struct {
		RunID string `json:"run_id"`
		Store string `json:"store"`
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if m.RunID == "" || m.Store == "" {
		t.Fatalf("%s: run_id %q, store %q: a cluster run needs both", where, m.RunID, m.Store)
	}
	return m.RunID, m.Store
}

// natsUser is one entry of a NATS users file (pkg/natsd.ReadUsers).
type natsUser struct {
	User        string `json:"user"`
	PasswordEnv string `json:"password_env"`
	Password    string `json:"password"`
	NKey        string `json:"nkey"`
	Role        string `json:"role"`
}

// readNATSUsers reads a users file and checks that it holds no password itself.
func readNATSUsers(t testing.TB, where string, b []byte) map[string]natsUser {
	t.Helper()
	var f struct {
		Users []natsUser `json:"users"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	out := map[string]natsUser{}
	for _, u := range f.Users {
		if u.Password != "" {
			t.Errorf("%s: user %s has a password in the file; use password_env", where, u.User)
		}
		if u.User != "" {
			out[u.User] = u
		}
	}
	return out
}

func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
