package bench

import (
	"strings"
	"testing"
)

const sampleOutput = `goos: linux
goarch: amd64
pkg: github.com/bicot-rl/bicot/pkg/bench
cpu: AMD EPYC
BenchmarkOverhead-2   	       1	90000000000 ns/op	         5.10 direct-s/step	         1.3 overhead-%	         1 same-rewards	         5.17 s/step	 2.5 update-s/step	 2.4 direct-update-s/step
BenchmarkScaling/workers=1-2         	       1	10515037875 ns/op	       100.0 efficiency-%	         0.8000 s/step	        20.00 samples/s
BenchmarkScaling/workers=64-2         	       1	27496528044 ns/op	        38.36 efficiency-%	         2.086 s/step	       491.0 samples/s
BenchmarkAsync/staleness=1-2 	       1	1 ns/op	       1.95 speedup	        97 learner-busy-%	        300 samples/s
PASS
pkg: github.com/bicot-rl/bicot/pkg/store/s3
BenchmarkCheckpointUpload-2   	       5	 200000000 ns/op	 170.00 MB/s
BenchmarkRawPutObject-2   	       5	 200000000 ns/op	 200.00 MB/s
pkg: github.com/bicot-rl/bicot/pkg/model
BenchmarkSampleKVCache-2   	SimpleGo backend: parallelism set to -1
       3	 573283612 ns/op	      1500 tokens/s
`

// TestParseGoBench: benchmark lines become metrics by unit (ns/op dropped) under their package,
// and the table holds each goal with whether it was met.
func TestParseGoBench(t *testing.T) {
	rep, err := ParseGoBench(strings.NewReader(sampleOutput))
	if err != nil {
		t.Fatal(err)
	}
	if rep.GOOS != "linux" || rep.CPU != "AMD EPYC" || rep.Procs != 2 || len(rep.Benchmarks) != 7 {
		t.Fatalf("report %+v", rep)
	}
	b := rep.Benchmarks[2]
	if b.Name != "BenchmarkScaling/workers=64" || b.Package != "github.com/bicot-rl/bicot/pkg/bench" || b.Metrics["efficiency-%"] != 38.36 || len(b.Metrics) != 3 {
		t.Fatalf("benchmark %+v", b)
	}
	if p := rep.Benchmarks[4].Package; p != "github.com/bicot-rl/bicot/pkg/store/s3" {
		t.Fatalf("checkpoint benchmark in package %q", p)
	}
	if b := rep.Benchmarks[6]; b.Name != "BenchmarkSampleKVCache" || b.Metrics["tokens/s"] != 1500 || len(b.Metrics) != 1 {
		t.Fatalf("benchmark whose own output split its result line: %+v", b)
	}
	met := map[string]bool{}
	for _, r := range rep.Rows {
		if r.Met != nil {
			met[r.Goal] = *r.Met
		}
	}
	want := map[string]bool{"< 2 %": true, ">= 90 % of linear": false, ">= 1.8x, learner busy": true, ">= 80 %": true}
	for g, ok := range want {
		if got, found := met[g]; !found || got != ok {
			t.Errorf("goal %q: met %v (found %v), want %v", g, got, found, ok)
		}
	}
	var md strings.Builder
	if err := Markdown(&md, rep.Rows); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "the update alone 2.50 vs 2.40 s (+4.0 %)") {
		t.Errorf("table:\n%s", md.String())
	}
	if !strings.Contains(md.String(), "| 491 samples/s, 38.4 % of linear (2.09 s/step) | >= 90 % of linear | no |") {
		t.Errorf("table:\n%s", md.String())
	}
}

func TestParseGoBenchRefusesBrokenMetrics(t *testing.T) {
	_, err := ParseGoBench(strings.NewReader("BenchmarkX-2 1 5 ns/op 3.x samples/s\n"))
	if err == nil || !strings.Contains(err.Error(), "BenchmarkX") {
		t.Fatalf("error %v, want one naming the benchmark", err)
	}
}
