package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: a run config YAML file, as every process loads it (--config) and as the coordinator
// reads the copy stored with a checkpoint when it resumes a run.
func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	more, _ := filepath.Glob("../../configs/ladder/*.yaml")
	paths = append(paths, more[:min(3, len(more))]...)
	if len(paths) == 0 {
		f.Fatal("no configs/*.yaml to seed with")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	def, err := Default().YAML()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def)
	f.Add([]byte("group_size: 0\nsampling: {temperature: .nan}\n"))
	f.Add([]byte("wire:\n  ack_wait: 1e400\n  poll_wait: -5\n"))
	f.Add([]byte("redispatch_after: 9999999999999h\n"))
	f.Add([]byte("expert_urls: {det: 'ftp://user:pw@host'}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("unknown_key: 1\n"))
	f.Add([]byte("--- \n...\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := Parse(data, &c); err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			return
		}
		_ = c.Redacted()
		_ = c.TasksPerStep()
		if _, err := c.YAML(); err != nil {
			t.Fatalf("valid config does not marshal: %v", err)
		}
	})
}
