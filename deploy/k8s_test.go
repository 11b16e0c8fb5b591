package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// manifests is the output of one kustomization, each object decoded strictly into its typed
// Kubernetes API struct (unknown fields are errors), custom resources as unstructured.
type manifests struct {
	namespaces   []corev1.Namespace
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	pdbs         []policyv1.PodDisruptionBudget
	custom       []*unstructured.Unstructured
}

// build runs kustomize (its Go API, as `kubectl apply -k` does) on a directory of the repository
// and decodes the result.
func build(t testing.TB, dir string) manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), filepath.FromSlash(dir)))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := manifests{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		statefulSets: map[string]*appsv1.StatefulSet{}, deployments: map[string]*appsv1.Deployment{}}
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("%s: %s %s", dir, r.GetKind(), r.GetName())
		decode := func(into any) {
			if err := yaml.UnmarshalStrict(b, into); err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
		switch r.GetApiVersion() + " " + r.GetKind() {
		case "v1 Namespace":
			var o corev1.Namespace
			decode(&o)
			m.namespaces = append(m.namespaces, o)
		case "v1 Service":
			var o corev1.Service
			decode(&o)
			m.services[o.Name] = &o
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			decode(&o)
			m.configMaps[o.Name] = &o
		case "apps/v1 StatefulSet":
			var o appsv1.StatefulSet
			decode(&o)
			m.statefulSets[o.Name] = &o
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			decode(&o)
			m.deployments[o.Name] = &o
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			decode(&o)
			m.pdbs = append(m.pdbs, o)
		case "keda.sh/v1alpha1 ScaledObject", "monitoring.coreos.com/v1 PodMonitor":
			// Through JSON, so that integers stay int64 as the unstructured helpers want.
			j, err := yaml.YAMLToJSON(b)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var o unstructured.Unstructured
			if err := o.UnmarshalJSON(j); err != nil {
				t.Errorf("%s: %v", where, err)
			}
			m.custom = append(m.custom, &o)
		default:
			t.Errorf("%s: no check decodes %s %s; add it to build()", where, r.GetApiVersion(), r.GetKind())
		}
	}
	return m
}

// workload is a pod template and where it comes from.
type workload struct {
	kind, name string
	selector   map[string]string
	spec       *corev1.PodTemplateSpec
	claims     []string // StatefulSet volume claim templates
}

func (m manifests) workloads() []workload {
	var out []workload
	for _, s := range m.statefulSets {
		w := workload{kind: "StatefulSet", name: s.Name, spec: &s.Spec.Template}
		if s.Spec.Selector != nil {
			w.selector = s.Spec.Selector.MatchLabels
		}
		for _, c := range s.Spec.VolumeClaimTemplates {
			w.claims = append(w.claims, c.Name)
		}
		out = append(out, w)
	}
	for _, d := range m.deployments {
		w := workload{kind: "Deployment", name: d.Name, spec: &d.Spec.Template}
		if d.Spec.Selector != nil {
			w.selector = d.Spec.Selector.MatchLabels
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b workload) int { return strings.Compare(a.name, b.name) })
	return out
}

// secretsExample reads deploy/k8s/secrets.example.yaml: secret name -> key -> placeholder.
func secretsExample(t testing.TB) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for i, doc := range strings.Split(string(readFile(t, "deploy/k8s/secrets.example.yaml")), "\n---\n") {
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
			t.Fatalf("secrets.example.yaml document %d: %v", i, err)
		}
		if s.Kind != "Secret" || s.Name == "" {
			t.Fatalf("secrets.example.yaml document %d: not a named Secret", i)
		}
		out[s.Name] = s.StringData
	}
	return out
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv resolves a container's environment as the kubelet would for a pod named podName:
// literal values, the pod's name, and the placeholder values of secrets.example.yaml. It fails on
// a reference to a Secret or key the example does not have.
func containerEnv(t testing.TB, where, podName string, c corev1.Container, secrets map[string]map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secrets[ref.Name][ref.Key]
			if !ok {
				t.Errorf("%s: $%s comes from secret %s key %s, which secrets.example.yaml does not have", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			t.Errorf("%s: $%s: a source these tests do not resolve", where, e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hands the container every key of a source; name each variable", where)
	}
	return env
}

// containerArgv is the container's command line with $(VAR) references expanded from env.
func containerArgv(c corev1.Container, env map[string]string) []string {
	var out []string
	for _, a := range slices.Concat(c.Command, c.Args) {
		out = append(out, envRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := env[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		}))
	}
	return out
}

// TestKubernetesManifests checks what `kubectl apply -k deploy/k8s` applies (kustomize's own
// build, every object decoded strictly into k8s.io/api types):
//   - every resource of kustomization.yaml exists, and the Secrets are referenced, not included;
//   - every container: a command whose flags its binary has, resource requests, non-root with
//     no privilege escalation and a read-only root, its env references resolving in
//     secrets.example.yaml; every volume mount has its volume; selectors match the templates;
//   - coordinators: a StatefulSet of 3 started in parallel under a headless Service that
//     publishes not-ready pods, --peers listing exactly the pods' stable names and the Service's
//     ports, --node-id the pod name, --raft-dir on the volume claim, probes on /healthz of --http,
//     a disruption budget of one;
//   - the learner: one replica, Recreate, --coordinators the peers' run-state endpoints;
//   - NATS: --nats of every role is the NATS Service's client port; JetStream's store on a claim;
//     the users file of the ConfigMap is deploy/nats-users.yaml, and each role's user has its
//     role and gets the password the server reads for it;
//   - the run config in the ConfigMap names files the image holds and an s3:// store.
func TestKubernetesManifests(t *testing.T) {
	root := repoRoot(t)
	var kust struct {
		Resources          []string `json:"resources"`
		ConfigMapGenerator []struct {
			Files []string `json:"files"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/k8s/kustomization.yaml"), &kust); err != nil {
		t.Fatal(err)
	}
	var files []string
	files = append(files, kust.Resources...)
	for _, g := range kust.ConfigMapGenerator {
		files = append(files, g.Files...)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(root, "deploy", "k8s", f)); err != nil {
			t.Errorf("kustomization.yaml: %v", err)
		}
	}
	if slices.Contains(kust.Resources, "secrets.example.yaml") {
		t.Error("kustomization.yaml applies secrets.example.yaml: Secrets are created by the operator, not from the repository")
	}

	m := build(t, "deploy/k8s")
	secrets := secretsExample(t)
	if len(m.namespaces) != 1 {
		t.Fatalf("%d namespaces, want 1", len(m.namespaces))
	}

	cm := m.configMaps["bicot-config"]
	if cm == nil {
		for name, c := range m.configMaps {
			if strings.HasPrefix(name, "bicot-config-") {
				cm = c
			}
		}
	}
	if cm == nil {
		t.Fatalf("no ConfigMap bicot-config")
	}
	runYAML := []byte(cm.Data["run.yaml"])
	_, store := runConfig(t, "ConfigMap run.yaml", runYAML)
	if !strings.HasPrefix(store, "s3://") {
		t.Errorf("ConfigMap run.yaml: store %q: pods share no directory, want s3://", store)
	}
	for key, p := range runConfigPaths(t, "ConfigMap run.yaml", runYAML) {
		if _, ok := inImage(t, p); !ok {
			t.Errorf("ConfigMap run.yaml: %s %s is not in the image", key, p)
		}
	}
	if cm.Data["nats-users.yaml"] != string(readFile(t, "deploy/nats-users.yaml")) {
		t.Error("deploy/k8s/nats-users.yaml differs from deploy/nats-users.yaml; keep the two in step")
	}
	users := readNATSUsers(t, "ConfigMap nats-users.yaml", []byte(cm.Data["nats-users.yaml"]))

	cmds := map[string]command{}
	envs := map[string]map[string]string{}
	for _, w := range m.workloads() {
		where := w.kind + " " + w.name
		pod := w.spec.Spec
		if !labels.SelectorFromSet(w.selector).Matches(labels.Set(w.spec.Labels)) || len(w.selector) == 0 {
			t.Errorf("%s: selector %v does not select its pods %v", where, w.selector, w.spec.Labels)
		}
		psc := pod.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: the pod must run as a non-root user (runAsNonRoot, runAsUser)", where)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token it does not use", where)
		}
		vols := slices.Clone(w.claims)
		for _, v := range pod.Volumes {
			vols = append(vols, v.Name)
			if v.ConfigMap != nil && m.configMaps[v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: no ConfigMap %s", where, v.Name, v.ConfigMap.Name)
			}
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
		}
		c := pod.Containers[0]
		where += " container " + c.Name
		if c.Image == "" {
			t.Errorf("%s: no image", where)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
				t.Errorf("%s: no %s request", where, r)
			}
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: securityContext must forbid privilege escalation, drop ALL capabilities and make the root read-only", where)
		}
		for _, vm := range c.VolumeMounts {
			if !slices.Contains(vols, vm.Name) {
				t.Errorf("%s: mount %s has no volume", where, vm.Name)
			}
		}
		podName := w.name + "-0"
		env := containerEnv(t, where, podName, c, secrets)
		argv := containerArgv(c, env)
		cmd := parseCommand(t, "deploy/k8s "+where, argv)
		cmds[w.name], envs[w.name] = cmd, env
		if cmd.sub == "run" {
			u, ok := users[cmd.flag("nats-user")]
			switch {
			case !ok:
				t.Errorf("%s: --nats-user %q is not in nats-users.yaml", where, cmd.flag("nats-user"))
			case u.Role != roleOf[cmd.bin]:
				t.Errorf("%s: NATS user %s has role %s, want %s", where, u.User, u.Role, roleOf[cmd.bin])
			}
			if cmd.flag("config") != "/etc/bicot/run.yaml" || !mountedAt(c, "/etc/bicot") {
				t.Errorf("%s: --config %s: want /etc/bicot/run.yaml from the ConfigMap", where, cmd.flag("config"))
			}
		}
	}

	// NATS, and that each role's password is the one the server reads for its user.
	natsSet := m.statefulSets["nats"]
	if natsSet == nil {
		t.Fatal("no StatefulSet nats")
	}
	natsCmd := cmds["nats"]
	if natsCmd.bin != "coordinator" || natsCmd.sub != "nats-server" {
		t.Fatalf("nats runs %q, want coordinator nats-server", natsCmd.argv)
	}
	if !onClaim(natsSet.Spec.Template.Spec.Containers[0], natsSet.Spec.VolumeClaimTemplates, natsCmd.flag("store-dir")) {
		t.Errorf("nats: --store-dir %s is not on a volume claim", natsCmd.flag("store-dir"))
	}
	natsSvc := m.services["nats"]
	if natsSvc == nil {
		t.Fatal("no Service nats")
	}
	clientPort := servicePort(t, natsSvc, natsSet.Spec.Template.Spec.Containers[0], natsCmd.flag("port"))
	for name, c := range cmds {
		if c.sub != "run" {
			continue
		}
		if want := "nats://nats:" + clientPort; c.flag("nats") != want {
			t.Errorf("%s: --nats %q, want %s", name, c.flag("nats"), want)
		}
		if u := users[c.flag("nats-user")]; envs["nats"][u.PasswordEnv] == "" {
			t.Errorf("%s: the NATS server gets no $%s for user %s", name, u.PasswordEnv, u.User)
		} else if d := m.statefulSets["nats"].Spec.Template.Spec.Containers[0]; secretOf(d, u.PasswordEnv) != secretOf(containerOf(m, name), "BICOT_NATS_PASSWORD") {
			t.Errorf("%s: $BICOT_NATS_PASSWORD comes from %s, the server's $%s from %s", name,
				secretOf(containerOf(m, name), "BICOT_NATS_PASSWORD"), u.PasswordEnv, secretOf(d, u.PasswordEnv))
		}
	}

	// Coordinators.
	co := m.statefulSets["coordinator"]
	if co == nil {
		t.Fatal("no StatefulSet coordinator")
	}
	if co.Spec.Replicas == nil || *co.Spec.Replicas != 3 {
		t.Errorf("coordinator: replicas %v, want 3", co.Spec.Replicas)
	}
	if co.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Error("coordinator: podManagementPolicy must be Parallel: in order, the first pod waits to be ready, which needs a raft majority")
	}
	hs := m.services[co.Spec.ServiceName]
	if hs == nil || hs.Spec.ClusterIP != corev1.ClusterIPNone || !hs.Spec.PublishNotReadyAddresses ||
		!labels.SelectorFromSet(hs.Spec.Selector).Matches(labels.Set(co.Spec.Template.Labels)) {
		t.Fatalf("coordinator: serviceName %q must be a headless Service (clusterIP None, publishNotReadyAddresses) selecting its pods", co.Spec.ServiceName)
	}
	cc := cmds["coordinator"]
	coC := co.Spec.Template.Spec.Containers[0]
	if cc.bin != "coordinator" || cc.sub != "run" {
		t.Fatalf("coordinator runs %q", cc.argv)
	}
	if !slices.Contains(coC.Args, "--node-id=$(POD_NAME)") {
		t.Error("coordinator: --node-id must be $(POD_NAME), the name --peers lists")
	}
	var wantPeers, raftHTTP []string
	for i := range int(*co.Spec.Replicas) {
		pod := fmt.Sprintf("%s-%d", co.Name, i)
		dns := pod + "." + hs.Name
		rp := servicePortNamed(t, hs, "raft")
		hp := servicePortNamed(t, hs, "raft-http")
		wantPeers = append(wantPeers, fmt.Sprintf("%s=%s:%s=%s:%s", pod, dns, rp, dns, hp))
		raftHTTP = append(raftHTTP, dns+":"+hp)
	}
	if got := strings.Split(cc.flag("peers"), ","); !slices.Equal(got, wantPeers) {
		t.Errorf("coordinator: --peers\n\t%v\nwant the pods' stable names\n\t%v", got, wantPeers)
	}
	if !onClaim(coC, co.Spec.VolumeClaimTemplates, cc.flag("raft-dir")) {
		t.Errorf("coordinator: --raft-dir %s is not on a volume claim", cc.flag("raft-dir"))
	}
	if cc.flag("keep-serving") != "true" {
		t.Error("coordinator: without --keep-serving a finished coordinator exits and is restarted")
	}
	httpPort := port(cc.flag("http"))
	for name, p := range map[string]*corev1.Probe{"startup": coC.StartupProbe, "readiness": coC.ReadinessProbe, "liveness": coC.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || containerPort(coC, p.HTTPGet.Port) != httpPort {
			t.Errorf("coordinator: %s probe must GET /healthz on --http's port %s", name, httpPort)
		}
	}
	if len(m.pdbs) != 1 || m.pdbs[0].Spec.MaxUnavailable == nil || m.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 ||
		!labels.SelectorFromSet(m.pdbs[0].Spec.Selector.MatchLabels).Matches(labels.Set(co.Spec.Template.Labels)) {
		t.Error("coordinator: want one PodDisruptionBudget with maxUnavailable 1 over the coordinators")
	}

	// Learner and workers.
	l := m.deployments["learner"]
	if l == nil || l.Spec.Replicas == nil || *l.Spec.Replicas != 1 || l.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("learner: want a Deployment of exactly 1 replica with the Recreate strategy")
	}
	if got := strings.Split(cmds["learner"].flag("coordinators"), ","); !sameSet(got, raftHTTP) {
		t.Errorf("learner: --coordinators %v, want the peers' run-state endpoints %v", got, raftHTTP)
	}
	for _, n := range []string{"rollout-worker", "reward-worker"} {
		if d := m.deployments[n]; d == nil {
			t.Errorf("no Deployment %s", n)
		} else if c := cmds[n]; c.flag("id") == "" || !strings.Contains(c.flag("id"), n+"-0") {
			t.Errorf("%s: --id %q: want one per pod ($(POD_NAME)); the default (<role>-<pid>) is the same in every container", n, c.flag("id"))
		}
	}
	if d := m.deployments["reward-worker"]; d != nil && d.Spec.Replicas != nil {
		t.Error("reward-worker: sets replicas, which every apply would reset under the ScaledObject")
	}
}

// TestKubernetesCustomResources checks the KEDA ScaledObject and the Prometheus PodMonitor of
// deploy/k8s as unstructured objects with their required fields: the ScaledObject scales the
// reward-worker Deployment on the lag of consumer "reward" of stream BICOT_<run_id>_SAMPLES (the
// names pkg/bus/topology.go gives them, run_id from the ConfigMap), read from the NATS Service's
// monitoring port in the manifests' namespace, the port `--monitor-port` opens; the PodMonitor
// scrapes /metrics on a port of the coordinators with the API token of secrets.example.yaml.
func TestKubernetesCustomResources(t *testing.T) {
	m := build(t, "deploy/k8s")
	ns := m.namespaces[0].Name
	var cm *corev1.ConfigMap
	for name, c := range m.configMaps {
		if strings.HasPrefix(name, "bicot-config") {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap bicot-config")
	}
	runID, _ := runConfig(t, "ConfigMap run.yaml", []byte(cm.Data["run.yaml"]))

	// The stream and consumer names are pkg/bus's; a change there must come here too.
	topo := string(readFile(t, "pkg/bus/topology.go"))
	for _, s := range []string{`return "BICOT_" + run + "_" + strings.ToUpper(kind)`, `t.Samples = q(KindSamples, "reward")`, `KindSamples = "samples"`} {
		if !strings.Contains(topo, s) {
			t.Fatalf("pkg/bus/topology.go no longer has %s: update the ScaledObject's stream and consumer and this test", s)
		}
	}

	var so, pm *unstructured.Unstructured
	for _, o := range m.custom {
		switch o.GetKind() {
		case "ScaledObject":
			so = o
		case "PodMonitor":
			pm = o
		}
	}
	if so == nil || pm == nil {
		t.Fatal("want a ScaledObject and a PodMonitor")
	}
	str := func(o *unstructured.Unstructured, path ...string) string {
		v, ok, err := unstructured.NestedString(o.Object, path...)
		if !ok || err != nil || v == "" {
			t.Errorf("%s %s: %s is required (%v)", o.GetKind(), o.GetName(), strings.Join(path, "."), err)
		}
		return v
	}
	if target := str(so, "spec", "scaleTargetRef", "name"); m.deployments[target] == nil || target != "reward-worker" {
		t.Errorf("ScaledObject scales %q, want the reward-worker Deployment", target)
	}
	minR, _, _ := unstructured.NestedInt64(so.Object, "spec", "minReplicaCount")
	maxR, ok, _ := unstructured.NestedInt64(so.Object, "spec", "maxReplicaCount")
	if !ok || maxR < minR || maxR < 1 {
		t.Errorf("ScaledObject: replicas %d..%d", minR, maxR)
	}
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 {
		t.Fatalf("ScaledObject: %d triggers, want 1", len(triggers))
	}
	trig := &unstructured.Unstructured{Object: triggers[0].(map[string]any)}
	trig.SetKind("ScaledObject trigger")
	if ty := str(trig, "type"); ty != "nats-jetstream" {
		t.Errorf("ScaledObject trigger type %q, want nats-jetstream", ty)
	}
	natsSet := m.statefulSets["nats"]
	monitor := parseCommand(t, "nats", containerArgv(natsSet.Spec.Template.Spec.Containers[0], nil)).flag("monitor-port")
	monPort := servicePort(t, m.services["nats"], natsSet.Spec.Template.Spec.Containers[0], monitor)
	want := map[string]string{
		"natsServerMonitoringEndpoint": fmt.Sprintf("nats.%s.svc.cluster.local:%s", ns, monPort),
		"account":                      "$G",
		"stream":                       "BICOT_" + runID + "_SAMPLES",
		"consumer":                     "reward",
	}
	for k, v := range want {
		if got := str(trig, "metadata", k); got != v {
			t.Errorf("ScaledObject trigger %s %q, want %q", k, got, v)
		}
	}
	if n, err := strconv.Atoi(str(trig, "metadata", "lagThreshold")); err != nil || n < 1 {
		t.Errorf("ScaledObject lagThreshold: want a positive integer (%v)", err)
	}

	co := m.statefulSets["coordinator"]
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(co.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %v does not select the coordinators", sel)
	}
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("PodMonitor: %d endpoints, want 1", len(eps))
	}
	ep := &unstructured.Unstructured{Object: eps[0].(map[string]any)}
	ep.SetKind("PodMonitor endpoint")
	if p := str(ep, "port"); containerPort(co.Spec.Template.Spec.Containers[0], intstr.FromString(p)) == "" {
		t.Errorf("PodMonitor port %q is not a coordinator port", p)
	}
	if p := str(ep, "path"); p != "/metrics" {
		t.Errorf("PodMonitor path %q, want /metrics", p)
	}
	secret, key := str(ep, "authorization", "credentials", "name"), str(ep, "authorization", "credentials", "key")
	if _, ok := secretsExample(t)[secret][key]; !ok {
		t.Errorf("PodMonitor token from secret %s key %s, which secrets.example.yaml does not have", secret, key)
	}
}

// TestKubernetesCommandsRun runs every container's command of deploy/k8s as the pod would (the
// ConfigMap's files at their mount path, env with secrets.example.yaml's values; preflight), the
// NATS server for real.
func TestKubernetesCommandsRun(t *testing.T) {
	m := build(t, "deploy/k8s")
	secrets := secretsExample(t)
	for _, w := range m.workloads() {
		c := w.spec.Spec.Containers[0]
		where := "deploy/k8s " + w.kind + " " + w.name
		mounts := map[string]string{}
		for _, vm := range c.VolumeMounts {
			dir := t.TempDir()
			for _, v := range w.spec.Spec.Volumes {
				if v.Name == vm.Name && v.ConfigMap != nil {
					for k, data := range m.configMaps[v.ConfigMap.Name].Data {
						if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			mounts[vm.MountPath] = dir
		}
		sb := newSandbox(t, mounts)
		env := containerEnv(t, where, w.name+"-0", c, secrets)
		argv := containerArgv(c, env)
		if w.name == "nats" {
			startNATS(t, where, argv, env, sb)
			continue
		}
		preflight(t, where, argv, env, sb)
	}
}

// TestKubernetesGPUOverlay checks deploy/k8s-gpu: the learner and the rollout workers get one
// nvidia.com/gpu each, the XLA backend (BICOT_BACKEND=xla:cuda, the variable pkg/mlx reads) and
// an image of their own (the static image has no XLA); their commands still parse; nothing else
// changes from deploy/k8s.
func TestKubernetesGPUOverlay(t *testing.T) {
	if !strings.Contains(string(readFile(t, "pkg/mlx/backend.go")), `BackendEnvVar = "BICOT_BACKEND"`) {
		t.Fatal("pkg/mlx no longer reads BICOT_BACKEND: update deploy/k8s-gpu and this test")
	}
	base, gpu := build(t, "deploy/k8s"), build(t, "deploy/k8s-gpu")
	secrets := secretsExample(t)
	for _, w := range gpu.workloads() {
		c := w.spec.Spec.Containers[0]
		var bc corev1.Container
		if w.kind == "Deployment" {
			bc = base.deployments[w.name].Spec.Template.Spec.Containers[0]
		} else {
			bc = base.statefulSets[w.name].Spec.Template.Spec.Containers[0]
		}
		where := "deploy/k8s-gpu " + w.kind + " " + w.name
		if w.name != "learner" && w.name != "rollout-worker" {
			if !equalYAML(t, c, bc) {
				t.Errorf("%s differs from deploy/k8s", where)
			}
			continue
		}
		if q, ok := c.Resources.Limits["nvidia.com/gpu"]; !ok || q.Value() != 1 {
			t.Errorf("%s: want a limit of one nvidia.com/gpu", where)
		}
		env := containerEnv(t, where, w.name+"-0", c, secrets)
		if env["BICOT_BACKEND"] != "xla:cuda" {
			t.Errorf("%s: BICOT_BACKEND %q, want xla:cuda", where, env["BICOT_BACKEND"])
		}
		if c.Image == bc.Image {
			t.Errorf("%s: runs the static image %s, which has no XLA backend", where, c.Image)
		}
		parseCommand(t, where, containerArgv(c, env))
	}
}

func equalYAML(t testing.TB, a, b any) bool {
	t.Helper()
	x, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

func mountedAt(c corev1.Container, dir string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == dir })
}

// onClaim reports whether dir is on a volume claim template's mount in c.
func onClaim(c corev1.Container, claims []corev1.PersistentVolumeClaim, dir string) bool {
	for _, vm := range c.VolumeMounts {
		if !slices.ContainsFunc(claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == vm.Name }) {
			continue
		}
		if dir == vm.MountPath || strings.HasPrefix(dir, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

// containerPort returns the number of a container port given by number or name, "" if none.
func containerPort(c corev1.Container, p intstr.IntOrString) string {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	return ""
}

// servicePort returns the Service port that reaches the container port number cport, failing
// when none does.
func servicePort(t testing.TB, s *corev1.Service, c corev1.Container, cport string) string {
	t.Helper()
	for _, sp := range s.Spec.Ports {
		if containerPort(c, sp.TargetPort) == cport {
			return strconv.Itoa(int(sp.Port))
		}
	}
	t.Fatalf("Service %s has no port to container port %s", s.Name, cport)
	return ""
}

func servicePortNamed(t testing.TB, s *corev1.Service, name string) string {
	t.Helper()
	for _, sp := range s.Spec.Ports {
		if sp.Name == name {
			return strconv.Itoa(int(sp.Port))
		}
	}
	t.Fatalf("Service %s has no port %s", s.Name, name)
	return ""
}

func containerOf(m manifests, name string) corev1.Container {
	if d := m.deployments[name]; d != nil {
		return d.Spec.Template.Spec.Containers[0]
	}
	return m.statefulSets[name].Spec.Template.Spec.Containers[0]
}

// secretOf names the secret key a container's variable comes from ("" when it is not a secret).
func secretOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	return ""
}
