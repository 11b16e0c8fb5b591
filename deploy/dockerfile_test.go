package deploy

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mattn/go-shellwords"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// stage is one FROM ... [AS name] of a Dockerfile with its instructions.
type stage struct {
	base, name string
	nodes      []*parser.Node
}

// parseDockerfile reads deploy/Dockerfile with BuildKit's own parser.
func parseDockerfile(t testing.TB) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("deploy/Dockerfile: %s", w.Short)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		if instr(n) == "from" {
			args := nodeArgs(n)
			s := stage{base: args[0]}
			if len(args) == 3 && strings.EqualFold(args[1], "as") {
				s.name = args[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if instr(n) != "arg" {
				t.Fatalf("deploy/Dockerfile: %s before the first FROM", n.Original)
			}
			continue
		}
		stages[len(stages)-1].nodes = append(stages[len(stages)-1].nodes, n)
	}
	if len(stages) < 2 {
		t.Fatalf("deploy/Dockerfile: %d stages, want a build stage and a runtime stage", len(stages))
	}
	return stages
}

// instr is an instruction's keyword in lower case (the parser keeps it as written).
func instr(n *parser.Node) string { return strings.ToLower(n.Value) }

func nodeArgs(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// words splits a RUN instruction into its shell words (shell form) or takes its exec form.
func words(t testing.TB, n *parser.Node) []string {
	t.Helper()
	if n.Attributes["json"] {
		return nodeArgs(n)
	}
	w, err := shellwords.Parse(strings.Join(nodeArgs(n), " "))
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %s: %v", n.Original, err)
	}
	return w
}

// layout is what the runtime image holds: its working directory and, for each COPY from the
// build context, the destination (relative to the working directory) and the source.
type layout struct {
	workdir string
	user    string
	copies  map[string]string
}

var (
	layoutOnce sync.Once
	layoutVal  layout
)

// imageLayout reads the runtime (last) stage of deploy/Dockerfile.
func imageLayout(t testing.TB) layout {
	t.Helper()
	stages := parseDockerfile(t)
	layoutOnce.Do(func() {
		l := layout{copies: map[string]string{}}
		for _, n := range stages[len(stages)-1].nodes {
			args := nodeArgs(n)
			switch instr(n) {
			case "workdir":
				l.workdir = path.Join(l.workdir, args[0])
			case "user":
				l.user = args[0]
			case "copy":
				if slices.ContainsFunc(n.Flags, func(f string) bool { return strings.HasPrefix(f, "--from") }) {
					continue
				}
				dest := args[len(args)-1]
				for _, src := range args[:len(args)-1] {
					d := dest
					if strings.HasSuffix(dest, "/") && !strings.HasSuffix(src, "/") {
						d = path.Join(dest, path.Base(src))
					}
					if path.IsAbs(d) {
						rel, ok := strings.CutPrefix(d, l.workdir+"/")
						if !ok {
							continue
						}
						d = rel
					}
					l.copies[d] = src
				}
			}
		}
		layoutVal = l
	})
	return layoutVal
}

// inImage reports whether a path relative to the image's working directory is one of the files
// the Dockerfile copies there, and returns the repository file it comes from.
func inImage(t testing.TB, rel string) (string, bool) {
	t.Helper()
	rel = path.Clean(rel)
	for dest, src := range imageLayout(t).copies {
		dest = strings.TrimSuffix(dest, "/")
		if rel == dest || strings.HasPrefix(rel, dest+"/") {
			return path.Join(strings.TrimSuffix(src, "/"), strings.TrimPrefix(rel, dest)), true
		}
	}
	return "", false
}

// TestDockerfile checks deploy/Dockerfile as BuildKit parses it:
//   - the build stage is golang at the go.mod's Go version, and its `go build` RUN line is exactly
//     buildEnv + buildArgs, the command TestBinariesAreStatic checks the output of;
//   - the runtime stage copies the binaries from the build stage into a directory on PATH, sets
//     a numeric non-root USER (what runAsNonRoot can verify) and a WORKDIR;
//   - every COPY source from the build context exists and is not excluded by .dockerignore;
//   - each COPY --from names an earlier stage.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	stages := parseDockerfile(t)

	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	build := stages[0]
	if want := "golang:" + string(m[1]); build.base != want && !strings.HasPrefix(build.base, want+".") && !strings.HasPrefix(build.base, want+"-") {
		t.Errorf("build stage FROM %s, want %s (go.mod says go %s)", build.base, want, m[1])
	}
	var runs [][]string
	for _, n := range build.nodes {
		if instr(n) == "run" {
			if w := words(t, n); slices.Contains(w, "build") && slices.Contains(w, "go") {
				runs = append(runs, w)
			}
		}
	}
	if len(runs) != 1 {
		t.Fatalf("build stage: %d RUN lines with `go build`, want 1", len(runs))
	}
	want := slices.Concat(buildEnv, buildArgs)
	if !slices.Equal(runs[0], want) {
		t.Errorf("the Dockerfile builds with\n\t%q\nthe tests with\n\t%q\nkeep them the same (binaries_test.go buildArgs)", runs[0], want)
	}
	out := buildArgs[slices.Index(buildArgs, "-o")+1]

	ignore := readDockerignore(t, root)
	final := stages[len(stages)-1]
	names := map[string]bool{}
	var fromBuild bool
	for i, s := range stages {
		for _, n := range s.nodes {
			if instr(n) != "copy" && instr(n) != "add" {
				continue
			}
			if instr(n) == "add" {
				t.Errorf("stage %d: %s: use COPY (ADD fetches URLs and unpacks archives)", i, n.Original)
				continue
			}
			args := nodeArgs(n)
			from := ""
			for _, f := range n.Flags {
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					from = v
				}
			}
			if from != "" {
				if !names[from] {
					t.Errorf("%s: no earlier stage %q", n.Original, from)
				}
				if i == len(stages)-1 && from == build.name && args[0] == out {
					fromBuild = true
					if d := args[len(args)-1]; d != "/usr/local/bin/" && d != "/usr/bin/" && d != "/bin/" {
						t.Errorf("%s: binaries go to %s, not a directory on the default PATH", n.Original, d)
					}
				}
				continue
			}
			for _, src := range args[:len(args)-1] {
				if src == "." || src == "./" {
					continue
				}
				clean := path.Clean(src)
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(clean))); err != nil {
					t.Errorf("%s: source %s: %v", n.Original, src, err)
				}
				if ok, err := ignore.MatchesOrParentMatches(clean); err != nil || ok {
					t.Errorf("%s: source %s is excluded by .dockerignore (%v)", n.Original, src, err)
				}
			}
		}
		if s.name != "" {
			names[s.name] = true
		}
	}
	if !fromBuild {
		t.Errorf("the runtime stage does not COPY --from=%s %s (the binaries)", build.name, out)
	}

	l := imageLayout(t)
	if l.workdir == "" {
		t.Error("the runtime stage sets no WORKDIR (the run config's paths are relative to it)")
	}
	uid, gid, _ := strings.Cut(l.user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n <= 0 {
		t.Errorf("runtime stage USER %q: want a numeric, non-root uid", l.user)
	}
	if gid != "" {
		if n, err := strconv.Atoi(gid); err != nil || n <= 0 {
			t.Errorf("runtime stage USER %q: want a numeric, non-root gid", l.user)
		}
	}
	lastUser := ""
	for _, n := range final.nodes {
		if instr(n) == "user" {
			lastUser = nodeArgs(n)[0]
		}
	}
	if lastUser != l.user {
		t.Errorf("runtime stage: USER %q is not the last USER (%q)", l.user, lastUser)
	}
}

func readDockerignore(t testing.TB, root string) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	for _, must := range []string{".git", "deploy/.env", "runs"} {
		if !slices.Contains(patterns, must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	return pm
}

// TestImageHoldsWhatTheRunConfigsRead checks that every file a run config of deploy/ names by a
// relative path (policy_init, codebook, experts, prompts, pretrain_prompts, eval prompts) is in
// the image's working directory: copied there by the Dockerfile from a file that exists.
func TestImageHoldsWhatTheRunConfigsRead(t *testing.T) {
	root := repoRoot(t)
	for _, rel := range []string{"deploy/run.yaml", "deploy/k8s/run.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for key, p := range runConfigPaths(t, rel, b) {
			src, ok := inImage(t, p)
			if !ok {
				t.Errorf("%s: %s %s is not copied into the image (deploy/Dockerfile)", rel, key, p)
				continue
			}
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(src))); err != nil {
				t.Errorf("%s: %s %s: %v", rel, key, p, err)
			}
		}
	}
}
