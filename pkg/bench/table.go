package bench

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Benchmark is one result line of `go test -bench`: its package, its name without the GOMAXPROCS
// suffix, and its metrics by unit (ns/op and the allocation counts left out).
type Benchmark struct {
	Package string             `json:"package"`
	Name    string             `json:"name"`
	Metrics map[string]float64 `json:"metrics"`
}

// Report is a whole benchmark run: the machine go test names and every benchmark.
type Report struct {
	GOOS       string      `json:"goos"`
	GOARCH     string      `json:"goarch"`
	CPU        string      `json:"cpu"`
	Procs      int         `json:"gomaxprocs"`
	Benchmarks []Benchmark `json:"benchmarks"`
	Rows       []Row       `json:"table"`
}

// Row is a line of the table: what was measured, the result, and the goal it is held to ("" for
// none) with whether it was met.
type Row struct {
	What   string `json:"what"`
	Result string `json:"result"`
	Goal   string `json:"goal,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+(\d+)\s+(.*)$`)
	// go test prints a benchmark's name before running it, so whatever the benchmark itself
	// prints (a backend announcing itself) lands between the name and the result: the name
	// alone (or followed by that output) on one line, the iteration count and metrics on a later one.
	benchName   = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?(?:\s|$)`)
	benchResult = regexp.MustCompile(`^(\d+)\s+(\S+ ns/op.*)$`)
)

// ParseGoBench reads `go test -bench` output (other lines are ignored) and fills in the table.
func ParseGoBench(r io.Reader) (Report, error) {
	var rep Report
	pkg := ""
	var pending []string // the name line's match of a result still to come
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, ": "); ok {
			switch k {
			case "pkg":
				pkg = v
				continue
			case "goos":
				rep.GOOS = v
				continue
			case "goarch":
				rep.GOARCH = v
				continue
			case "cpu":
				rep.CPU = v
				continue
			}
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			if n := benchName.FindStringSubmatch(line); n != nil {
				pending = n
			} else if res := benchResult.FindStringSubmatch(line); res != nil && pending != nil {
				m = []string{"", pending[1], pending[2], res[1], res[2]}
			}
			if m == nil {
				continue
			}
		}
		pending = nil
		if m[2] != "" {
			rep.Procs, _ = strconv.Atoi(m[2])
		}
		b := Benchmark{Package: pkg, Name: m[1], Metrics: map[string]float64{}}
		f := strings.Fields(m[4])
		if len(f)%2 != 0 {
			return rep, fmt.Errorf("benchmark %s: metrics %q are not value-unit pairs", b.Name, m[4])
		}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return rep, fmt.Errorf("benchmark %s: metric %q: %w", b.Name, f[i]+" "+f[i+1], err)
			}
			switch f[i+1] {
			case "ns/op", "B/op", "allocs/op":
			default:
				b.Metrics[f[i+1]] = v
			}
		}
		rep.Benchmarks = append(rep.Benchmarks, b)
	}
	if err := sc.Err(); err != nil {
		return rep, err
	}
	rep.Rows = Rows(rep.Benchmarks)
	return rep, nil
}

// Rows makes the table of the orchestration benchmarks (scripts/bench.sh runs them all), in the
// order the README lists them; benchmarks missing from bs leave their rows out.
func Rows(bs []Benchmark) []Row {
	get := func(name string) map[string]float64 {
		for _, b := range bs {
			if b.Name == name {
				return b.Metrics
			}
		}
		return nil
	}
	var rows []Row
	add := func(what, result, goal string, met *bool) {
		rows = append(rows, Row{What: what, Result: result, Goal: goal, Met: met})
	}
	check := func(ok bool) *bool { return &ok }

	if m := get("BenchmarkOverhead"); m != nil {
		same := "no"
		if m["same-rewards"] == 1 {
			same = "yes"
		}
		res := fmt.Sprintf("%.1f %% of the step (%.2f s/step vs %.2f s/step direct; same rewards: %s)", m["overhead-%"], m["s/step"], m["direct-s/step"], same)
		if u, du := m["update-s/step"], m["direct-update-s/step"]; u > 0 && du > 0 {
			// The update is the same code on both sides: its difference is the measurement's noise.
			res += fmt.Sprintf("; the update alone %.2f vs %.2f s (%+.1f %%)", u, du, 100*(u-du)/u)
		}
		add("orchestration overhead (laptop run, real compute, vs the same compute called directly)", res,
			"< 2 %", check(m["overhead-%"] < 2 && m["same-rewards"] == 1))
	}
	for _, n := range []int{1, 4, 16, 64} {
		m := get(fmt.Sprintf("BenchmarkScaling/workers=%d", n))
		if m == nil {
			continue
		}
		goal, met := "", (*bool)(nil)
		if n == 64 {
			goal, met = ">= 90 % of linear", check(m["efficiency-%"] >= 90)
		}
		add(fmt.Sprintf("scaling, simulated compute: %d rollout + %d reward workers", n, n),
			fmt.Sprintf("%.0f samples/s, %.1f %% of linear (%.2f s/step)", m["samples/s"], m["efficiency-%"], m["s/step"]), goal, met)
	}
	for _, k := range []int{0, 1, 2} {
		m := get(fmt.Sprintf("BenchmarkAsync/staleness=%d", k))
		if m == nil {
			continue
		}
		goal, met := "", (*bool)(nil)
		if k == 1 {
			goal, met = ">= 1.8x, learner busy", check(m["speedup"] >= 1.8)
		}
		add(fmt.Sprintf("async: staleness %d (16 + 16 workers, update as long as the rollout)", k),
			fmt.Sprintf("%.0f samples/s, %.2fx staleness 0, learner busy %.0f %%", m["samples/s"], m["speedup"], m["learner-busy-%"]), goal, met)
	}
	single, batched := get("BenchmarkRewardBatching/single"), get("BenchmarkRewardBatching/batched")
	if single != nil && batched != nil {
		res := fmt.Sprintf("%.0f samples/s batched by 8 vs %.0f one per call (%.2fx)", batched["samples/s"], single["samples/s"], batched["samples/s"]/single["samples/s"])
		if b32 := get("BenchmarkRewardBatching/batched32"); b32 != nil {
			res += fmt.Sprintf("; by 32: %.0f samples/s (%.2fx)", b32["samples/s"], b32["samples/s"]/single["samples/s"])
		}
		add("reward worker, built-in experts: batched vs one sample per ensemble call", res, "", nil)
	}
	kv, full := get("BenchmarkSampleKVCache"), get("BenchmarkSampleFullForward")
	if kv != nil && full != nil {
		add("sampling: KV cache vs full forward pass (4 prompts x 8, CFG 3)",
			fmt.Sprintf("%.0f vs %.0f tokens/s (%.1fx)", kv["tokens/s"], full["tokens/s"], kv["tokens/s"]/full["tokens/s"]), "", nil)
	}
	if nocfg := get("BenchmarkSampleNoCFG"); kv != nil && nocfg != nil {
		add("sampling: CFG off vs on (KV cache)",
			fmt.Sprintf("%.0f vs %.0f tokens/s (%.2fx)", nocfg["tokens/s"], kv["tokens/s"], nocfg["tokens/s"]/kv["tokens/s"]), "", nil)
	}
	up, raw := get("BenchmarkCheckpointUpload"), get("BenchmarkRawPutObject")
	if up != nil && raw != nil {
		ratio := 100 * up["MB/s"] / raw["MB/s"]
		add("checkpoint save + S3 upload vs raw PutObject (32 MiB, same server)",
			fmt.Sprintf("%.0f vs %.0f MB/s (%.0f %%)", up["MB/s"], raw["MB/s"], ratio), ">= 80 %", check(ratio >= 80))
	}
	if m := get("BenchmarkFailover"); m != nil {
		add("raft leader failover, 3 coordinators (kill to first commit)",
			fmt.Sprintf("p50 %.0f ms, p99 %.0f ms over %.0f elections", m["failover-p50-ms"], m["failover-p99-ms"], m["elections"]), "", nil)
	}
	if m := get("BenchmarkApplyThree"); m != nil {
		add("raft apply throughput, 3 coordinators, concurrent proposers", fmt.Sprintf("%.0f commits/s", m["applies/s"]), "", nil)
	}
	if m := get("BenchmarkSampleLatency"); m != nil {
		add("sample message, publish to consumer", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms over %.0f messages", m["p50-us"]/1000, m["p99-us"]/1000, m["msgs"]), "", nil)
	}
	if m := get("BenchmarkPolicyFanout"); m != nil {
		add("policy announcement to every rollout worker", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms to %.0f watchers", m["p50-ms"], m["p99-ms"], m["watchers"]), "", nil)
	}
	return rows
}

// Markdown writes rows as a Markdown table.
func Markdown(w io.Writer, rows []Row) error {
	if _, err := fmt.Fprintln(w, "| measurement | result | goal | met |\n|---|---|---|---|"); err != nil {
		return err
	}
	for _, r := range rows {
		met := ""
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "yes"
			}
		}
		if _, err := fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.What, r.Result, r.Goal, met); err != nil {
			return err
		}
	}
	return nil
}
