package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/mattn/go-shellwords"
)

const (
	composeFile = "docker-compose.yml"
	envExample  = "deploy/.env.example"
)

// loadCompose loads docker-compose.yml with compose-spec's own loader (interpolation from
// deploy/.env.example, not from this process's environment; validation against the compose
// schema; normalisation), as `docker compose --env-file deploy/.env.example` would.
func loadCompose(t testing.TB) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root),
		cli.WithEnvFiles(filepath.Join(root, filepath.FromSlash(envExample))),
		cli.WithDotEnv,
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return p
}

// envFile reads deploy/.env.example.
func envFile(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, envExample)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=value", envExample, line)
		}
		out[k] = v
	}
	return out
}

func serviceEnv(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// serviceArgv is what a bicot service's container runs: its entrypoint (a shell wrapper, or none:
// the image has no ENTRYPOINT) followed by its command.
func serviceArgv(s types.ServiceConfig) []string {
	return slices.Concat([]string(s.Entrypoint), []string(s.Command))
}

// roleCommand returns the bicot command line a service runs, seeing through the workers' shell
// wrapper (`/bin/sh -c "exec BIN SUB ... \"$@\"" NAME ARGS...`): the words of the script with
// "$@" replaced by ARGS.
func roleCommand(t testing.TB, name string, argv []string) []string {
	t.Helper()
	if len(argv) < 3 || (argv[0] != "/bin/sh" && argv[0] != "sh") || argv[1] != "-c" {
		return argv
	}
	script := argv[2]
	args := argv[min(len(argv), 4):]
	p := shellwords.NewParser()
	w, err := p.Parse(script)
	if err != nil {
		t.Fatalf("%s: entrypoint script %q: %v", name, script, err)
	}
	if len(w) == 0 || w[0] != "exec" {
		t.Fatalf("%s: entrypoint script %q: want `exec BINARY ...` so the binary gets the signals", name, script)
	}
	var out []string
	for _, x := range w[1:] {
		if x == "$@" {
			out = append(out, args...)
			continue
		}
		out = append(out, x)
	}
	return out
}

// TestComposeFile checks docker-compose.yml as compose-go loads it:
//   - the services (NATS, S3, three coordinators, learner, rollout and reward workers) with
//     restart policies, and healthchecks on NATS, S3 and the coordinators that hit the ports and
//     paths the commands serve (/healthz on --http; the NATS monitoring port);
//   - the workers can be scaled: no container_name, no host ports, no fixed hostname;
//   - every host port is bound to 127.0.0.1;
//   - the coordinators form one raft cluster: the same --peers everywhere, each node in it under
//     its own service name, raft data on a named volume of its own; the learner's --coordinators
//     are the peers' run-state endpoints; every --nats URL is the NATS service's port;
//   - every file the project references exists (build context, Dockerfile, configs);
//   - each role's NATS user is in deploy/nats-users.yaml with the role of its binary, and the
//     password the role gets is the one the server reads for that user.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	var names []string
	for n := range p.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	want := []string{"coordinator-1", "coordinator-2", "coordinator-3", "learner", "nats", "reward-worker", "rollout-worker", "s3"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}

	for _, n := range names {
		s := p.Services[n]
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("%s: no restart policy", n)
		}
		for _, port := range s.Ports {
			if port.Published != "" && port.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %s published on %q, want 127.0.0.1", n, port.Published, port.HostIP)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(s.Build.Context); err != nil {
				t.Errorf("%s: build context: %v", n, err)
			}
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: dockerfile: %v", n, err)
			}
		}
		for _, c := range s.Configs {
			cfg, ok := p.Configs[c.Source]
			if !ok {
				t.Errorf("%s: config %s is not defined", n, c.Source)
				continue
			}
			if _, err := os.Stat(cfg.File); err != nil {
				t.Errorf("%s: config %s: %v", n, c.Source, err)
			}
		}
	}
	for _, n := range []string{"rollout-worker", "reward-worker"} {
		s := p.Services[n]
		if s.ContainerName != "" || len(s.Ports) > 0 || s.Hostname != "" {
			t.Errorf("%s: container_name %q, ports %v, hostname %q: a scaled service can have none", n, s.ContainerName, s.Ports, s.Hostname)
		}
		// The default id (<role>-<pid>) is the same in every container.
		if id := parseCommand(t, n, roleCommand(t, n, serviceArgv(s))).flag("id"); !strings.Contains(id, "${HOSTNAME}") {
			t.Errorf("%s: --id %q: want one per container (${HOSTNAME})", n, id)
		}
	}
	for _, n := range []string{"nats", "s3", "coordinator-1", "coordinator-2", "coordinator-3"} {
		if hc := p.Services[n].HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s: no healthcheck", n)
		}
	}

	cmds := map[string]command{}
	for _, n := range names {
		if n == "s3" {
			continue
		}
		cmds[n] = parseCommand(t, composeFile+" "+n, roleCommand(t, n, serviceArgv(p.Services[n])))
	}
	natsCmd := cmds["nats"]
	if natsCmd.bin != "coordinator" || natsCmd.sub != "nats-server" {
		t.Fatalf("nats runs %q, want coordinator nats-server", natsCmd.argv)
	}
	checkHealthURL(t, "nats", p.Services["nats"].HealthCheck, "127.0.0.1:"+natsCmd.flag("monitor-port"), "/healthz")
	natsURL := "nats://nats:" + natsCmd.flag("port")

	var peers string
	var raftHTTP []string
	volumes := map[string]string{}
	for _, n := range []string{"coordinator-1", "coordinator-2", "coordinator-3"} {
		c := cmds[n]
		if c.bin != "coordinator" || c.sub != "run" {
			t.Fatalf("%s runs %q, want coordinator run", n, c.argv)
		}
		if peers == "" {
			peers = c.flag("peers")
			for _, e := range strings.Split(peers, ",") {
				f := strings.Split(e, "=")
				if len(f) != 3 {
					t.Fatalf("%s: --peers entry %q: want id=raft-addr=raft-http", n, e)
				}
				raftHTTP = append(raftHTTP, f[2])
			}
		} else if c.flag("peers") != peers {
			t.Errorf("%s: --peers %q differs from coordinator-1's %q", n, c.flag("peers"), peers)
		}
		self := ""
		for _, e := range strings.Split(c.flag("peers"), ",") {
			if f := strings.Split(e, "="); f[0] == c.flag("node-id") {
				self = e
				if host(f[1]) != n || host(f[2]) != n {
					t.Errorf("%s: its --peers entry %q does not name its service", n, e)
				}
			}
		}
		if self == "" {
			t.Errorf("%s: --node-id %q is not in --peers", n, c.flag("node-id"))
		}
		checkHealthURL(t, n, p.Services[n].HealthCheck, "127.0.0.1:"+port(c.flag("http")), "/healthz")
		vol := volumeFor(p.Services[n], c.flag("raft-dir"))
		if vol == "" {
			t.Errorf("%s: --raft-dir %s is not on a named volume", n, c.flag("raft-dir"))
		} else if other, dup := volumes[vol]; dup {
			t.Errorf("%s and %s share the raft volume %s", n, other, vol)
		}
		volumes[vol] = n
		if c.flag("keep-serving") != "true" {
			t.Errorf("%s: without --keep-serving the coordinator exits after the run and restart: unless-stopped starts it again", n)
		}
	}
	if got := strings.Split(cmds["learner"].flag("coordinators"), ","); !sameSet(got, raftHTTP) {
		t.Errorf("learner --coordinators %v, want the peers' run-state endpoints %v", got, raftHTTP)
	}
	for n, c := range cmds {
		if n != "nats" && c.flag("nats") != natsURL {
			t.Errorf("%s: --nats %q, want %s", n, c.flag("nats"), natsURL)
		}
	}

	users := readNATSUsers(t, "deploy/nats-users.yaml", readFile(t, "deploy/nats-users.yaml"))
	natsEnv := serviceEnv(p.Services["nats"])
	for n, c := range cmds {
		if n == "nats" {
			continue
		}
		u, ok := users[c.flag("nats-user")]
		switch {
		case !ok:
			t.Errorf("%s: --nats-user %q is not in deploy/nats-users.yaml", n, c.flag("nats-user"))
		case u.Role != roleOf[c.bin]:
			t.Errorf("%s: NATS user %s has role %s, want %s", n, u.User, u.Role, roleOf[c.bin])
		case natsEnv[u.PasswordEnv] == "" || serviceEnv(p.Services[n])["BICOT_NATS_PASSWORD"] != natsEnv[u.PasswordEnv]:
			t.Errorf("%s: $BICOT_NATS_PASSWORD is not what the NATS server reads from $%s", n, u.PasswordEnv)
		}
	}
}

// TestComposeSecrets checks how docker-compose.yml gets its secrets: every secret variable of a
// service is interpolated from deploy/.env (none written in the file), deploy/.env.example
// defines exactly the variables the file uses with placeholder values only, and deploy/.env is
// ignored by git and by the Docker build context.
func TestComposeSecrets(t *testing.T) {
	raw := string(readFile(t, composeFile))
	used := map[string]bool{}
	// ${VAR} is interpolated; $${VAR} is a literal $ for the container's shell.
	for _, m := range regexp.MustCompile(`(^|[^$])\$\{([A-Z0-9_]+)`).FindAllStringSubmatch(raw, -1) {
		used[m[2]] = true
	}
	env := envFile(t)
	for k := range used {
		if _, ok := env[k]; !ok {
			t.Errorf("%s uses ${%s}, which %s does not define", composeFile, k, envExample)
		}
	}
	for k, v := range env {
		if !used[k] {
			t.Errorf("%s defines %s, which %s does not use", envExample, k, composeFile)
		}
		if isSecretName(k) && !strings.HasPrefix(v, "change-me") {
			t.Errorf("%s: %s=%q: secrets in the example are change-me placeholders", envExample, k, v)
		}
	}
	entry := regexp.MustCompile(`^\s+([A-Z0-9_]+):\s*(.*)$`)
	for _, line := range strings.Split(raw, "\n") {
		if m := entry.FindStringSubmatch(line); m != nil && isSecretName(m[1]) && !strings.HasPrefix(m[2], "${") {
			t.Errorf("%s: %s is set to %q: secrets come from deploy/.env (${VAR})", composeFile, m[1], m[2])
		}
	}
	p := loadCompose(t)
	for n, s := range p.Services {
		for k, v := range s.Environment {
			if isSecretName(k) && (v == nil || *v == "") {
				t.Errorf("%s: %s is empty", n, k)
			}
		}
	}
	if !slices.Contains(strings.Fields(string(readFile(t, "deploy/.gitignore"))), ".env") {
		t.Error("deploy/.gitignore does not ignore .env")
	}
}

// TestComposeCommandsRun checks every bicot service's command by running it as its container
// would (preflight; the NATS server is started for real with its users file and passwords),
// with the environment compose gives it from deploy/.env.example.
func TestComposeCommandsRun(t *testing.T) {
	p := loadCompose(t)
	for _, n := range []string{"nats", "coordinator-1", "coordinator-2", "coordinator-3", "learner", "rollout-worker", "reward-worker"} {
		s := p.Services[n]
		mounts := map[string]string{}
		for _, c := range s.Configs {
			mounts[c.Target] = p.Configs[c.Source].File
		}
		for _, v := range s.Volumes {
			mounts[v.Target] = t.TempDir()
		}
		sb := newSandbox(t, mounts)
		argv := serviceArgv(s)
		if n == "nats" {
			startNATS(t, composeFile+" "+n, argv, serviceEnv(s), sb)
			continue
		}
		preflight(t, composeFile+" "+n, argv, serviceEnv(s), sb)
	}
}

func checkHealthURL(t testing.TB, name string, hc *types.HealthCheckConfig, hostport, path string) {
	t.Helper()
	if hc == nil {
		return
	}
	test := strings.Join(hc.Test, " ")
	if !strings.Contains(test, "http://"+hostport+path) {
		t.Errorf("%s: healthcheck %q does not call http://%s%s", name, test, hostport, path)
	}
}

// volumeFor returns the named volume mounted at or above dir in s, "" when none.
func volumeFor(s types.ServiceConfig, dir string) string {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && (dir == v.Target || strings.HasPrefix(dir, strings.TrimSuffix(v.Target, "/")+"/")) {
			return v.Source
		}
	}
	return ""
}

func host(hostport string) string {
	h, _, _ := strings.Cut(hostport, ":")
	return h
}

func port(hostport string) string {
	_, p, _ := strings.Cut(hostport, ":")
	return p
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
