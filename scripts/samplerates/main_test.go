package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSampleRatesTable(t *testing.T) {
	samples := strings.Join([]string{
		// Prompt a: one right sample of two; prompt b: none right.
		// Plans: two parse, one puts two objects in c4, one names no cell.
		`{"prompt":"a","task_type":"spatial","plan":"small red solid circle a1, large blue dotted cross b2","plan_quality":1,"follows_plan":true,"score":1}`,
		`{"prompt":"a","task_type":"spatial","plan":"small red solid circle c4, large blue dotted cross c4","plan_quality":0,"follows_plan":true,"score":0.05}`,
		`{"prompt":"b","task_type":"spatial","plan":"small red solid circle","plan_quality":1,"follows_plan":false,"score":0}`,
		`{"prompt":"b","task_type":"spatial","plan":"large blue dotted cross d2","plan_quality":0,"follows_plan":false,"score":0}`,
		`{"prompt":"c","task_type":"color","plan":"small red solid circle a1, small red solid circle a2, small red solid circle a1","plan_quality":1,"follows_plan":true,"score":1}`,
	}, "\n")
	var out bytes.Buffer
	if err := run(strings.NewReader(samples), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| color | 1 | 1.00 | 1.000 | 1.000 | 1.000 | 0.000 | 1.000 |",
		"| spatial | 2 | 0.50 | 0.250 | 0.500 | 0.500 | 0.500 | 0.250 |",
		// Three plans name two cells (one shares), one names one, one names three (shares).
		"| 1 | 1 | 0.000 | 0.000 |",
		"| 2 | 2 | 0.500 | 0.062 |",
		"| 3 | 1 | 1.000 | 0.180 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(strings.NewReader(""), &out); err == nil {
		t.Error("no samples: want an error")
	}
	if err := run(strings.NewReader("{"), &out); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("broken line: err %v, want one naming line 1", err)
	}
}
