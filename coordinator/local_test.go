package main

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/learner"
)

// `coordinator local` without --config runs exactly configs/laptop.yaml: the file the README
// points at and the defaults must not drift apart.
func TestLaptopDefaultsAreTheShippedFile(t *testing.T) {
	file, err := config.Load(filepath.Join("..", "configs", "laptop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	def := laptopDefaults()
	// The grpo section is untyped YAML (1 and 1.0 decode differently): compare the trainer
	// options it makes, then the rest.
	fo, err := learner.TrainerOptions(file)
	if err != nil {
		t.Fatal(err)
	}
	do, err := learner.TrainerOptions(def)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fo, do) {
		t.Errorf("grpo options:\nconfigs/laptop.yaml %+v\nlaptopDefaults      %+v", fo, do)
	}
	file.GRPO, def.GRPO = nil, nil
	if !reflect.DeepEqual(file, def) {
		t.Errorf("configs/laptop.yaml and laptopDefaults differ:\nfile     %+v\ndefaults %+v", file, def)
	}
}
