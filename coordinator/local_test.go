package main

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
)

// `coordinator local` without --config runs exactly configs/laptop.yaml: the file the README
// points at and the defaults must not drift apart.
func TestLaptopDefaultsAreTheShippedFile(t *testing.T) {
	file, err := config.Load(filepath.Join("..", "configs", "laptop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	def := laptopDefaults()
	if !reflect.DeepEqual(file, def) {
		t.Errorf("configs/laptop.yaml and laptopDefaults differ:\nfile     %+v\ndefaults %+v", file, def)
	}
}
