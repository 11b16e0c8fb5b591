package deploy

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildEnv and buildArgs are how deploy/Dockerfile builds the binaries (its RUN line with
// `go build`, which TestDockerfile holds to them) and how these tests build the binaries they
// run: what the tests check is what the image holds. The -o value is the Dockerfile's; the tests
// put their own directory there.
var (
	buildEnv  = []string{"CGO_ENABLED=0"}
	buildArgs = []string{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", "/out/",
		"./coordinator", "./learner", "./rollout-worker", "./reward-worker"}
	binNames = []string{"coordinator", "learner", "rollout-worker", "reward-worker"}
)

// roleOf is the NATS role (nats-users.yaml) each binary's run command connects as.
var roleOf = map[string]string{
	"coordinator":    "coordinator",
	"learner":        "learner",
	"rollout-worker": "rollout",
	"reward-worker":  "reward",
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// repoRoot is the main module's directory, the parent of this one.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil || !bytes.HasPrefix(b, []byte("module github.com/bicot-rl/bicot\n")) {
		t.Fatalf("%s is not the bicot module's root (go.mod: %v)", dir, err)
	}
	return dir
}

// binaries builds the four binaries once per test process, with buildEnv and buildArgs, and
// returns their directory.
func binaries(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "bicot-deploy-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		args := slices.Clone(buildArgs)
		args[slices.Index(args, "-o")+1] = dir + string(filepath.Separator)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), buildEnv...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("%s %s: %v\n%s", strings.Join(buildEnv, " "), strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built the binaries in %v", time.Since(start).Round(time.Millisecond))
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// TestBinariesAreStatic checks that the Dockerfile's build command gives static binaries (no
// ELF interpreter, no shared libraries), which any base image runs, built without cgo and with
// -trimpath.
func TestBinariesAreStatic(t *testing.T) {
	dir := binaries(t)
	for _, name := range binNames {
		path := filepath.Join(dir, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: dynamically linked", name)
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v (%v)", name, libs, err)
		}
		f.Close()
		bi, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: build info: %v", name, err)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s: built with CGO_ENABLED=%q -trimpath=%q, want 0 and true", name, settings["CGO_ENABLED"], settings["-trimpath"])
		}
	}
}

// flagInfo is what a command's --help lists: each long flag and whether it takes a value.
type flagInfo map[string]bool

var (
	helpMu    sync.Mutex
	helpCache = map[string]flagInfo{}
	// "  -h, --help   help", "      --http string   status API address": name, then a type word
	// for flags that take a value (bool flags have none).
	flagLine = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)(?: ([a-zA-Z0-9.]+))?\s{2,}`)
)

// flagsOf runs `bin sub --help` and returns the flags it lists, the global ones included. It
// fails when bin is not one of the binaries or sub not one of its commands.
func flagsOf(t testing.TB, bin, sub string) flagInfo {
	t.Helper()
	if !slices.Contains(binNames, bin) {
		t.Fatalf("%q is not one of the binaries %v", bin, binNames)
	}
	key := bin + " " + sub
	helpMu.Lock()
	defer helpMu.Unlock()
	if fi, ok := helpCache[key]; ok {
		return fi
	}
	out, err := exec.Command(filepath.Join(binaries(t), bin), sub, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", key, err, out)
	}
	// cobra prints the parent's help for an unknown command; a real one has this usage line.
	if !strings.Contains(string(out), "\n  "+key+" [flags]") {
		t.Fatalf("%s is not a command of %s:\n%s", sub, bin, out)
	}
	fi := flagInfo{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			fi[m[1]] = m[2] != ""
		}
	}
	if _, ok := fi["help"]; !ok || len(fi) < 3 {
		t.Fatalf("%s --help: could not read its flags:\n%s", key, out)
	}
	helpCache[key] = fi
	return fi
}

// command is one command line of a deployment file, split into the binary, its subcommand and
// the flags given (each flag's values in order).
type command struct {
	where string
	argv  []string
	bin   string
	sub   string
	flags map[string][]string
}

func (c command) flag(name string) string {
	if v := c.flags[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// parseCommand checks that argv runs one of the binaries' commands with flags that command
// has, and splits it. Values are taken as written (container paths, $(VAR) references).
func parseCommand(t testing.TB, where string, argv []string) command {
	t.Helper()
	if len(argv) < 2 {
		t.Fatalf("%s: command %q: want BINARY COMMAND [flags]", where, argv)
	}
	c := command{where: where, argv: argv, bin: argv[0], sub: argv[1], flags: map[string][]string{}}
	fi := flagsOf(t, c.bin, c.sub)
	for i := 2; i < len(argv); i++ {
		a := argv[i]
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Errorf("%s: %s %s: argument %q is not a --flag (the run commands take no arguments)", where, c.bin, c.sub, a)
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		takesValue, known := fi[name]
		if !known {
			t.Errorf("%s: %s %s has no flag --%s", where, c.bin, c.sub, name)
			continue
		}
		if takesValue && !hasValue {
			if i+1 >= len(argv) {
				t.Errorf("%s: --%s needs a value", where, name)
				continue
			}
			i++
			value = argv[i]
		}
		if !takesValue && !hasValue {
			value = "true"
		}
		c.flags[name] = append(c.flags[name], value)
	}
	return c
}

// closedNATS returns a nats:// URL on which nothing listens.
func closedNATS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "nats://" + addr
}

// sandbox is a directory laid out like a container of the image: the image's working directory
// (the Dockerfile's COPYs into it, linked to the repository's files) and the files mounted into
// the container at their container paths (mounts: container path -> file or directory here).
type sandbox struct {
	workdir string
	mounts  map[string]string
}

// rewrite maps a container path in an argument (a whole value or after --flag=) to its file
// here.
func (s sandbox) rewrite(arg string) string {
	prefix, value := "", arg
	if strings.HasPrefix(arg, "--") {
		if name, v, ok := strings.Cut(arg, "="); ok {
			prefix, value = name+"=", v
		}
	}
	for cpath, host := range s.mounts {
		if value == cpath || strings.HasPrefix(value, strings.TrimSuffix(cpath, "/")+"/") {
			return prefix + host + strings.TrimPrefix(value, cpath)
		}
	}
	return arg
}

// newSandbox lays out the image's working directory (imageLayout) in a temporary directory.
func newSandbox(t testing.TB, mounts map[string]string) sandbox {
	t.Helper()
	root := repoRoot(t)
	wd := t.TempDir()
	for dest, src := range imageLayout(t).copies {
		target := filepath.Join(wd, filepath.FromSlash(strings.TrimSuffix(dest, "/")))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(src, "/"))), target); err != nil {
			t.Fatal(err)
		}
	}
	return sandbox{workdir: wd, mounts: mounts}
}

// preflight runs a role's run command as its container would (the container's environment, in
// the image's working directory, mounted files in place) against a NATS URL on which nothing
// listens, and checks that it gets as far as connecting to NATS: its flags parse, its run config
// loads and validates, its secrets and TLS files are in place, and (coordinator) its raft peers
// and its prompt file are right. It also checks that no secret of env shows in the output.
// argv may start with a shell wrapper (/bin/sh -c SCRIPT NAME ARGS...), which runs as is.
func preflight(t testing.TB, where string, argv []string, env map[string]string, sb sandbox) {
	t.Helper()
	nats := closedNATS(t)
	args := make([]string, 0, len(argv))
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "--nats" && i+1 < len(argv):
			args = append(args, a, nats)
			i++
		case strings.HasPrefix(a, "--nats="):
			args = append(args, "--nats="+nats)
		default:
			args = append(args, sb.rewrite(a))
		}
	}
	// Try the closed port once instead of waiting wire.connect_wait for a server to come up.
	args = append(args, "--set", "wire.connect_wait=0s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := args[0]
	if !strings.HasPrefix(name, "/") {
		name = filepath.Join(binaries(t), name)
	}
	cmd := exec.CommandContext(ctx, name, args[1:]...)
	cmd.Dir = sb.workdir
	cmd.Env = []string{"PATH=" + binaries(t) + ":/usr/bin:/bin", "HOME=" + t.TempDir(), "HOSTNAME=preflight"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s: %q did not stop within a minute:\n%s", where, args, out)
	}
	if err == nil || !strings.Contains(string(out), "connect "+nats) {
		t.Errorf("%s: %q should fail only at connecting to NATS (%s), got %v:\n%s", where, argv, nats, err, out)
	}
	for k, v := range env {
		if isSecretName(k) && len(v) >= 6 && strings.Contains(string(out), v) {
			t.Errorf("%s: the value of $%s shows in the output:\n%s", where, k, out)
		}
	}
}

// startNATS runs the NATS server command of a deployment file (coordinator nats-server) with its
// environment and users file until it serves, on free loopback ports and a temporary store, and
// stops it: the users file parses, every password variable it names is set, and the flags go
// together.
func startNATS(t testing.TB, where string, argv []string, env map[string]string, sb sandbox) {
	t.Helper()
	c := parseCommand(t, where, argv)
	if c.bin != "coordinator" || c.sub != "nats-server" {
		t.Fatalf("%s: %q is not `coordinator nats-server`", where, argv)
	}
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	args := []string{"nats-server", "--host=127.0.0.1", "--port=0", "--store-dir=" + filepath.Join(dir, "js"), "--url-file=" + urlFile}
	if c.flag("monitor-port") != "" {
		args = append(args, "--monitor-port=-1")
	}
	for name, vs := range c.flags {
		switch name {
		case "host", "port", "store-dir", "monitor-port", "url-file":
			continue
		}
		for _, v := range vs {
			args = append(args, sb.rewrite("--"+name+"="+v))
		}
	}
	cmd := exec.Command(filepath.Join(binaries(t), "coordinator"), args...)
	cmd.Dir = sb.workdir
	cmd.Env = []string{"HOME=" + dir}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(urlFile); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("%s: nats-server %q exited: %v\n%s", where, args, err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("%s: nats-server %q not serving after 30 s:\n%s", where, args, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("%s: nats-server did not stop cleanly: %v\n%s", where, err, out.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("%s: nats-server did not stop on SIGINT", where)
	}
	for k, v := range env {
		if isSecretName(k) && len(v) >= 6 && strings.Contains(out.String(), v) {
			t.Errorf("%s: the value of $%s shows in the NATS server's output", where, k)
		}
	}
}

// isSecretName reports whether an environment variable carries a secret by its name.
func isSecretName(name string) bool {
	for _, s := range []string{"PASSWORD", "_PW_", "TOKEN", "SECRET", "ACCESS_KEY"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}
