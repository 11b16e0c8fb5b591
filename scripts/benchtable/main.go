// Command benchtable turns `go test -bench` output (stdin) into the orchestration benchmarks'
// table (pkg/bench.Rows): Markdown on stdout, and with -out the raw results and the table as
// JSON. scripts/bench.sh runs it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/bicot-rl/bicot/pkg/bench"
)

func main() {
	out := flag.String("out", "", "write the results and the table as JSON to this file")
	command := flag.String("command", "scripts/bench.sh", "the command recorded in the JSON")
	flag.Parse()
	if err := run(*out, *command); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(out, command string) error {
	rep, err := bench.ParseGoBench(os.Stdin)
	if err != nil {
		return err
	}
	if len(rep.Benchmarks) == 0 {
		return fmt.Errorf("no benchmark results on stdin")
	}
	if err := bench.Markdown(os.Stdout, rep.Rows); err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	doc := struct {
		Command string    `json:"command"`
		Date    time.Time `json:"date"`
		CPUs    int       `json:"cpus"`
		bench.Report
	}{command, time.Now().UTC().Round(time.Second), runtime.NumCPU(), rep}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}
