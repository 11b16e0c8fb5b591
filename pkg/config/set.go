package config

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Sets are --set assignments, key.path=value, applied over a loaded config: any key of the run
// config, at any depth, without a YAML file (--set grpo.optimizer.lr=3e-4 --set
// sampling.temperature=0.9). The value is read as YAML (numbers, booleans, durations, [lists]);
// unknown keys are errors, as in a file.
type Sets []string

// Register adds the repeatable --set flag and --print-config to fs.
func (s *Sets) Register(fs *pflag.FlagSet, print *bool) {
	fs.StringArrayVar((*[]string)(s), "set", nil, "key.path=value over the run config, after the file and the other flags (repeatable), e.g. --set grpo.optimizer.lr=3e-4")
	fs.BoolVar(print, "print-config", false, "print the effective run config (every default included) as YAML and exit")
}

// Apply applies every assignment to c in order.
func (s Sets) Apply(c *Config) error {
	for _, a := range s {
		if err := c.Set(a); err != nil {
			return err
		}
	}
	return nil
}

// Set applies one key.path=value assignment to c.
func (c *Config) Set(assignment string) error {
	path, value, ok := strings.Cut(assignment, "=")
	path = strings.TrimSpace(path)
	if !ok || path == "" {
		return fmt.Errorf("--set %q: want key.path=value", assignment)
	}
	keys := strings.Split(path, ".")
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("--set %q: empty key in %q", assignment, path)
		}
	}
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(value), &v); err != nil {
		return fmt.Errorf("--set %s: value %q: %w", path, value, err)
	}
	val := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
	if v.Kind == yaml.DocumentNode && len(v.Content) == 1 {
		val = v.Content[0]
	}
	// Build {k1: {k2: ... value}} and decode it over c like a file.
	for i := len(keys) - 1; i >= 0; i-- {
		val = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: keys[i]}, val}}
	}
	b, err := yaml.Marshal(val)
	if err != nil {
		return fmt.Errorf("--set %s: %w", path, err)
	}
	if err := Parse(b, c); err != nil {
		return fmt.Errorf("--set %s=%s: %w", path, value, err)
	}
	return nil
}
