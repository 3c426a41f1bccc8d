package helm

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	server     = releaseName + "-npanel"
	etcd       = server + "-etcd"
	agentSvc   = server + "-agent"
	clusterDom = "cluster.local"
)

var (
	perReplicaValues = filepath.Join("testdata", "per-replica-values.yaml")
	typoValues       = filepath.Join("testdata", "typo-values.yaml")
)

// TestLint runs helm lint in strict mode (warnings fail) on the chart with
// its default values and with each values file the tests render.
func TestLint(t *testing.T) {
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string][]string{
		"default":       nil,
		"external-etcd": {externalValues},
		"per-replica":   {perReplicaValues},
	} {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = namespace
			l.KubeVersion = kv
			res := l.Run([]string{chartDir}, readValues(t, files...))
			for _, m := range res.Messages {
				t.Log(m)
			}
			if res.TotalChartsLinted != 1 || len(res.Errors) > 0 {
				t.Fatalf("helm lint --strict: %d charts linted, errors: %v", res.TotalChartsLinted, res.Errors)
			}
		})
	}
}

// TestDefaultValues renders the chart as installed with no values: three
// replicas on the chart's own three-member etcd over TLS.
func TestDefaultValues(t *testing.T) {
	o := render(t)
	checkCommon(t, o)

	sts := o.statefulSet(t, server)
	args := o.serverArgs(t)

	// The replicas reach etcd by member name, over TLS with a client
	// certificate, at addresses the etcd StatefulSet gives its members.
	e := o.statefulSet(t, etcd)
	if got := deref(e.Spec.Replicas); got != 3 {
		t.Errorf("etcd replicas = %d, want 3", got)
	}
	if e.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("etcd podManagementPolicy = %q: members wait for a quorum to be ready", e.Spec.PodManagementPolicy)
	}
	if _, ok := o.services[e.Spec.ServiceName]; !ok {
		t.Errorf("etcd serviceName %q: no such Service", e.Spec.ServiceName)
	} else if !o.services[e.Spec.ServiceName].Spec.PublishNotReadyAddresses {
		t.Errorf("etcd headless Service must publish not-ready members: they find each other before a quorum")
	}
	var want []string
	for i := range 3 {
		want = append(want, fmt.Sprintf("https://%s-%d.%s.%s.svc.%s:2379", etcd, i, e.Spec.ServiceName, namespace, clusterDom))
	}
	if got := args["--etcd-endpoints"]; got != strings.Join(want, ",") {
		t.Errorf("--etcd-endpoints = %q, want %q", got, strings.Join(want, ","))
	}
	eargs := flagMap(containerNamed(t, &e.Spec.Template.Spec, "etcd").Args)
	for _, f := range []string{"--client-cert-auth", "--peer-client-cert-auth"} {
		if _, ok := eargs[f]; !ok {
			t.Errorf("etcd lacks %s", f)
		}
	}
	for _, f := range []string{"--listen-client-urls", "--listen-peer-urls", "--advertise-client-urls", "--initial-advertise-peer-urls"} {
		if !strings.HasPrefix(eargs[f], "https://") {
			t.Errorf("etcd %s = %q, want https", f, eargs[f])
		}
	}
	if got, want := strings.Count(eargs["--initial-cluster"], "=https://"), 3; got != want {
		t.Errorf("etcd --initial-cluster %q names %d members, want %d", eargs["--initial-cluster"], got, want)
	}
	if args["--etcd-max-txn-ops"] != eargs["--max-txn-ops"] || args["--etcd-max-txn-ops"] == "" {
		t.Errorf("npanel --etcd-max-txn-ops %q and etcd --max-txn-ops %q differ", args["--etcd-max-txn-ops"], eargs["--max-txn-ops"])
	}
	if len(e.Spec.VolumeClaimTemplates) != 1 || len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("etcd and server each need a volume claim template for their data")
	}
	if pdb, ok := o.pdbs[etcd]; !ok || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
		t.Errorf("etcd PodDisruptionBudget must keep a quorum of 2: %+v", pdb)
	}

	// The generated certificates: members valid for the names npanel dials,
	// the client certificate signed by the CA the members trust.
	tlsSecret := o.secret(t, etcd+"-tls")
	ca := parseCert(t, tlsSecret.Data["ca.crt"])
	member := parseCert(t, tlsSecret.Data["tls.crt"])
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, u := range want {
		host, _, _ := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
		if _, err := member.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("etcd member certificate for %s: %v", host, err)
		}
		// etcd resolves a peer's certificate names to match the
		// connecting address; a wildcard would need a PTR record.
		if !slices.Contains(member.DNSNames, host) {
			t.Errorf("etcd member certificate does not name %s itself: %v", host, member.DNSNames)
		}
	}
	// Members present the same certificate to each other as clients.
	if _, err := member.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("etcd member certificate as a peer client: %v", err)
	}
	client := parseCert(t, o.secret(t, etcd+"-client-tls").Data["tls.crt"])
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("npanel's etcd client certificate: %v", err)
	}

	// The generated KEK is what npanel reads: 64 hex digits.
	kek := strings.TrimSpace(string(o.secret(t, server+"-kek").Data["kek"]))
	if b, err := hex.DecodeString(kek); err != nil || len(b) != 32 {
		t.Errorf("generated KEK %q is not 64 hex digits", kek)
	}
	if pw := o.secret(t, server+"-admin").Data["password"]; len(pw) < 16 {
		t.Errorf("generated admin password has %d characters", len(pw))
	}
	for _, s := range []string{server + "-kek", etcd + "-ca"} {
		if o.secret(t, s).Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("Secret %s must outlive an uninstall, as the volumes it unlocks do", s)
		}
	}

	// Without an advertise value the replicas fall back to the agent
	// Service's cluster name, on the gateway's port.
	if got, want := args["--advertise"], fmt.Sprintf("%s.%s.svc.%s:7443", agentSvc, namespace, clusterDom); got != want {
		t.Errorf("--advertise = %q, want %q", got, want)
	}
	if o.services[agentSvc].Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("agent Service type = %q, want LoadBalancer", o.services[agentSvc].Spec.Type)
	}
}

// TestExternalEtcd renders with ci/external-etcd-values.yaml: no etcd of the
// chart's, the operator's endpoints and client certificate passed on.
func TestExternalEtcd(t *testing.T) {
	o := render(t, externalValues)
	checkCommon(t, o)
	for name := range o.statefulSets {
		if name != server {
			t.Errorf("StatefulSet %s rendered with an external etcd", name)
		}
	}
	for name := range o.secrets {
		if strings.Contains(name, "etcd") {
			t.Errorf("Secret %s rendered with an external etcd", name)
		}
	}
	for name := range o.services {
		if strings.Contains(name, "etcd") {
			t.Errorf("Service %s rendered with an external etcd", name)
		}
	}
	vals := readValues(t, externalValues)
	ext := vals["etcd"].(map[string]any)["external"].(map[string]any)
	var eps []string
	for _, e := range ext["endpoints"].([]any) {
		eps = append(eps, e.(string))
	}
	args := o.serverArgs(t)
	if got := args["--etcd-endpoints"]; got != strings.Join(eps, ",") {
		t.Errorf("--etcd-endpoints = %q, want %q", got, strings.Join(eps, ","))
	}
	if args["--etcd-max-txn-ops"] != "1024" {
		t.Errorf("--etcd-max-txn-ops = %q, want the external cluster's 1024", args["--etcd-max-txn-ops"])
	}
	pod := &o.statefulSet(t, server).Spec.Template.Spec
	if v := volumeNamed(t, pod, "etcd-client"); v.Secret == nil || v.Secret.SecretName != ext["tlsSecret"] {
		t.Errorf("etcd client volume = %+v, want Secret %v", v.VolumeSource, ext["tlsSecret"])
	}
	for _, f := range []string{"--etcd-cacert", "--etcd-cert", "--etcd-key"} {
		if !strings.HasPrefix(args[f], "/etc/npanel/etcd/") {
			t.Errorf("%s = %q, want a file of the mounted client Secret", f, args[f])
		}
	}
	// An operator-provided KEK: none rendered, theirs mounted.
	if _, ok := o.secrets[server+"-kek"]; ok {
		t.Errorf("a KEK Secret was rendered although kek.existingSecret is set")
	}
	if v := volumeNamed(t, pod, "kek-secret"); v.Secret == nil || v.Secret.SecretName != "npanel-kek" {
		t.Errorf("KEK volume = %+v, want the operator's Secret npanel-kek", v.VolumeSource)
	}
	if got := args["--advertise"]; got != "agents.npanel.example.net:7443" {
		t.Errorf("--advertise = %q", got)
	}
	if p := o.services[agentSvc].Spec.ExternalTrafficPolicy; p != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("agent Service externalTrafficPolicy = %q, want Local", p)
	}
}

// TestPerReplicaAgentServices: one agent Service per replica, each
// selecting its pod, the advertise address naming the pod; an operator's
// API certificate and an IPv6 listener.
func TestPerReplicaAgentServices(t *testing.T) {
	o := render(t, perReplicaValues)
	checkCommon(t, o)
	for i := range 3 {
		name := fmt.Sprintf("%s-%d", agentSvc, i)
		s, ok := o.services[name]
		if !ok {
			t.Errorf("no Service %s", name)
			continue
		}
		if got, want := s.Spec.Selector["statefulset.kubernetes.io/pod-name"], fmt.Sprintf("%s-%d", server, i); got != want {
			t.Errorf("Service %s selects pod %q, want %q", name, got, want)
		}
	}
	if ports := o.services[agentSvc].Spec.Ports; len(ports) != 2 || ports[1].TargetPort.String() != "api" || ports[1].Port != 443 {
		t.Errorf("agent Service with includeAPI: ports %+v, want the API on 443 too", ports)
	}
	args := o.serverArgs(t)
	if got := args["--advertise"]; got != "$(POD_NAME).agents.npanel.example.net:7443" {
		t.Errorf("--advertise = %q", got)
	}
	eargs := flagMap(containerNamed(t, &o.statefulSet(t, etcd).Spec.Template.Spec, "etcd").Args)
	if got := eargs["--listen-client-urls"]; got != "https://[::]:2379" {
		t.Errorf("etcd --listen-client-urls = %q, want https://[::]:2379", got)
	}
	// The client port serves gRPC alone; HTTP stays on the pod's loopback.
	if got := eargs["--listen-client-http-urls"]; got != "https://127.0.0.1:2382" {
		t.Errorf("etcd --listen-client-http-urls = %q, want https://127.0.0.1:2382", got)
	}
	if got := args["--api-listen"]; got != "[::]:8080" {
		t.Errorf("--api-listen = %q, want [::]:8080", got)
	}
	if args["--api-cert"] != "/etc/npanel/api-tls/tls.crt" || args["--api-key"] != "/etc/npanel/api-tls/tls.key" {
		t.Errorf("--api-cert/--api-key = %q/%q", args["--api-cert"], args["--api-key"])
	}
	c := containerNamed(t, &o.statefulSet(t, server).Spec.Template.Spec, "server")
	if e := envNamed(c, "NPANEL_METRICS_TOKEN"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "npanel-metrics" {
		t.Errorf("NPANEL_METRICS_TOKEN must come from the Secret npanel-metrics: %+v", e)
	}
	if _, ok := o.secrets[server+"-admin"]; ok {
		t.Errorf("an admin Secret was rendered although adminPassword.existingSecret is set")
	}
}

// TestStrictDecoding: a misspelt field reaches the manifest through a
// passthrough value and the strict decoder refuses it; so it does a
// hand-written manifest with a wrong field.
func TestStrictDecoding(t *testing.T) {
	manifest, err := renderManifest(t, readValues(t, typoValues))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if _, err := decodeManifest(manifest); err == nil || !strings.Contains(err.Error(), `unknown field "operater"`) {
		t.Fatalf("decoding a toleration with a misspelt field: err = %v, want unknown field operater", err)
	}

	for name, doc := range map[string]string{
		"misspelt":     "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  prots:\n    - port: 1\n",
		"wrong type":   "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  replicas: three\n",
		"duplicate":    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n  name: y\n",
		"unknown kind": "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n",
	} {
		if _, err := decodeManifest(doc); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
}

// TestMisspeltValueRefused: values.schema.json knows every key, so a
// misspelt one fails lint and install instead of being ignored.
func TestMisspeltValueRefused(t *testing.T) {
	vals := readValues(t, filepath.Join("testdata", "misspelt-key-values.yaml"))
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	res := l.Run([]string{chartDir}, vals)
	if len(res.Errors) == 0 || !strings.Contains(fmt.Sprint(res.Errors), "advertize") {
		t.Errorf("helm lint passed a misspelt value: %v", res.Errors)
	}
	if _, err := renderManifest(t, vals); err == nil || !strings.Contains(err.Error(), "advertize") {
		t.Errorf("render with a misspelt value: err = %v, want the schema to name advertize", err)
	}
}

// TestValuesRefused: values the chart cannot run with fail at render.
func TestValuesRefused(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"external etcd without endpoints": {"etcd": map[string]any{"enabled": false}},
		"even etcd members":               {"etcd": map[string]any{"replicas": 2}},
		"half the etcd certificates":      {"etcd": map[string]any{"tls": map[string]any{"existingSecret": "mine"}}},
		"plain http external etcd":        {"etcd": map[string]any{"enabled": false, "external": map[string]any{"endpoints": []any{"http://etcd:2379"}}}},
		"unknown scheduler":               {"server": map[string]any{"scheduler": "random"}},
		"undrainable":                     {"server": map[string]any{"replicas": 1}},
	} {
		if _, err := renderManifest(t, vals); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
}

// checkCommon holds for every values file.
func checkCommon(t *testing.T, o *objects) {
	t.Helper()
	sts := o.statefulSet(t, server)
	pod := &sts.Spec.Template.Spec
	c := containerNamed(t, pod, "server")
	args := o.serverArgs(t)

	if got := deref(sts.Spec.Replicas); got != 3 {
		t.Errorf("server replicas = %d, want 3", got)
	}
	if pdb, ok := o.pdbs[server]; !ok || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
		t.Errorf("server PodDisruptionBudget must have minAvailable 2: %+v", pdb)
	} else if sel := labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels); !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("server PodDisruptionBudget selects %v, not the server pods", pdb.Spec.Selector.MatchLabels)
	}
	if sel := labels.SelectorFromSet(sts.Spec.Selector.MatchLabels); !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("server StatefulSet selector does not match its pods")
	}

	// Probes: /readyz and /healthz on the API's port, in the API's scheme.
	apiPort := containerPort(t, c, "api")
	if got := listenPort(t, args["--api-listen"]); got != apiPort {
		t.Errorf("--api-listen port %d, container port api %d", got, apiPort)
	}
	scheme := corev1.URISchemeHTTPS
	if _, ok := args["--api-insecure-http"]; ok {
		scheme = corev1.URISchemeHTTP
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: none over HTTP", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Scheme != scheme || resolvePort(t, c, g.Port) != apiPort {
			t.Errorf("%s probe: %s %s port %s, want %s %s port %d", p.name, g.Scheme, g.Path, g.Port.String(), scheme, p.path, apiPort)
		}
	}

	// The agent Service: TCP straight to the gateway's port.
	agentPort := containerPort(t, c, "agent")
	if got := listenPort(t, args["--agent-listen"]); got != agentPort {
		t.Errorf("--agent-listen port %d, container port agent %d", got, agentPort)
	}
	as, ok := o.services[agentSvc]
	if !ok {
		t.Fatalf("no agent Service %s", agentSvc)
	}
	var ap *corev1.ServicePort
	for i, p := range as.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP {
			t.Errorf("agent Service port %s is %s, want TCP", p.Name, p.Protocol)
		}
		if resolvePort(t, c, p.TargetPort) == agentPort {
			ap = &as.Spec.Ports[i]
		}
	}
	if ap == nil {
		t.Fatalf("agent Service ports %+v: none to the gateway's %d", as.Spec.Ports, agentPort)
	}
	if _, port, err := net.SplitHostPort(args["--advertise"]); err != nil || port != strconv.Itoa(int(ap.Port)) {
		t.Errorf("--advertise %q: want the agent Service's port %d", args["--advertise"], ap.Port)
	}
	api, ok := o.services[server]
	if !ok || len(api.Spec.Ports) != 1 || resolvePort(t, c, api.Spec.Ports[0].TargetPort) != apiPort {
		t.Errorf("API Service %s must forward to the API port %d: %+v", server, apiPort, api)
	}
	hl, ok := o.services[sts.Spec.ServiceName]
	if !ok || hl.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("server serviceName %q: want a headless Service", sts.Spec.ServiceName)
	} else {
		gossip := containerPort(t, c, "gossip")
		if got := listenPort(t, args["--gossip-listen"]); got != gossip {
			t.Errorf("--gossip-listen port %d, container port gossip %d", got, gossip)
		}
		var protos []corev1.Protocol
		for _, p := range hl.Spec.Ports {
			if resolvePort(t, c, p.TargetPort) == gossip {
				protos = append(protos, p.Protocol)
			}
		}
		if !slices.Contains(protos, corev1.ProtocolTCP) || !slices.Contains(protos, corev1.ProtocolUDP) {
			t.Errorf("headless Service carries gossip over %v, want TCP and UDP", protos)
		}
	}

	// Every Service selects pods the chart runs, on ports they expose.
	for name, s := range o.services {
		var target *corev1.PodTemplateSpec
		// Per-replica Services select one pod by the name the StatefulSet
		// gives it; the rest must match the template.
		base := maps.Clone(s.Spec.Selector)
		delete(base, "statefulset.kubernetes.io/pod-name")
		for _, st := range o.statefulSets {
			if labels.SelectorFromSet(base).Matches(labels.Set(st.Spec.Template.Labels)) {
				target = &st.Spec.Template
			}
		}
		if target == nil {
			t.Errorf("Service %s selects no pods of the chart", name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type == intstr.String && findPort(target.Spec.Containers, p.TargetPort.StrVal) == nil {
				t.Errorf("Service %s targets port %q its pods do not name", name, p.TargetPort.StrVal)
			}
		}
	}

	// The KEK: one Secret, the same for every replica (not a per-pod
	// volume), copied 0600 into memory by the init container, read from
	// there; the data volume is per pod and never holds it.
	kekFile := args["--kek-file"]
	if kekFile == "" || strings.HasPrefix(kekFile, "/var/lib/npanel") {
		t.Errorf("--kek-file = %q: want the copy of the shared Secret, not a file in the per-pod data dir", kekFile)
	}
	kekDir := filepath.Dir(kekFile)
	if m := mountAt(c, kekDir); m == nil || !m.ReadOnly {
		t.Errorf("server must mount the KEK at %s read-only: %+v", kekDir, m)
	} else if v := volumeNamed(t, pod, m.Name); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("KEK copy volume %s: want a memory emptyDir, got %+v", m.Name, v.VolumeSource)
	}
	if len(pod.InitContainers) != 1 {
		t.Fatalf("want one init container (the KEK copy), got %d", len(pod.InitContainers))
	}
	ic := pod.InitContainers[0]
	if len(ic.Command) != 5 || ic.Command[0] != "install" || ic.Command[2] != "0600" || ic.Command[4] != kekFile {
		t.Errorf("KEK init container command %q: want install -m 0600 SECRET %s", ic.Command, kekFile)
	} else {
		src := ic.Command[3]
		m := mountAt(&ic, filepath.Dir(src))
		if m == nil {
			t.Errorf("KEK init container reads %s from no mount", src)
		} else if v := volumeNamed(t, pod, m.Name); v.Secret == nil || v.Secret.SecretName == "" {
			t.Errorf("KEK source volume %s is not a Secret: %+v", m.Name, v.VolumeSource)
		}
		if m := mountAt(&ic, kekDir); m == nil || m.ReadOnly {
			t.Errorf("KEK init container must write the copy volume at %s", kekDir)
		}
	}
	for _, vct := range sts.Spec.VolumeClaimTemplates {
		for _, m := range append(c.VolumeMounts, ic.VolumeMounts...) {
			if m.Name == vct.Name && strings.HasPrefix(kekDir, m.MountPath) {
				t.Errorf("the KEK lives under the per-pod volume %s", vct.Name)
			}
		}
	}

	// GOMEMLIMIT below the memory limit, or the collector never works
	// harder before the kernel kills the pod.
	if e := envNamed(c, "GOMEMLIMIT"); e != nil {
		limit := c.Resources.Limits.Memory().Value()
		if soft := parseGoMemLimit(t, e.Value); limit == 0 || soft >= limit || soft < limit/2 {
			t.Errorf("GOMEMLIMIT %s (%d bytes) against a memory limit of %d bytes: want between half and all of it", e.Value, soft, limit)
		}
	}

	// The admin password from a Secret, by environment, first start only.
	if e := envNamed(c, "NPANEL_ADMIN_PASSWORD"); e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("NPANEL_ADMIN_PASSWORD must come from a Secret: %+v", e)
	}

	// Every flag the chart passes exists in the binary.
	flags := serverFlags(t)
	for f := range args {
		if !flags[strings.TrimPrefix(f, "--")] {
			t.Errorf("the chart passes %s, which npanel server does not define", f)
		}
	}

	checkNoSecretLeaks(t, o)
	for name, st := range o.statefulSets {
		checkPodHardening(t, name, &st.Spec.Template.Spec)
	}
}

// serverFlags are the flags `npanel server` defines, read from its source
// files cmd/npanel/server*.go (a main package of another module cannot be
// imported).
func serverFlags(t *testing.T) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	def := regexp.MustCompile(`f\.\w+\(&[^,]+, "([a-z0-9-]+)"`)
	files, err := filepath.Glob(filepath.Join("..", "..", "cmd", "npanel", "server*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range def.FindAllSubmatch(src, -1) {
			flags[string(m[1])] = true
		}
	}
	if !flags["data-dir"] || !flags["acme-directory"] {
		t.Fatalf("found no flag definitions in cmd/npanel (have %v): has the source moved?", keys(flags))
	}
	return flags
}

// checkNoSecretLeaks: no value of a rendered Secret appears in a ConfigMap,
// an argument, a command or a literal environment value.
func checkNoSecretLeaks(t *testing.T, o *objects) {
	t.Helper()
	var secrets []string
	for name, s := range o.secrets {
		for k, v := range s.Data {
			if strings.HasSuffix(k, ".crt") {
				continue // certificates are public
			}
			if len(strings.TrimSpace(string(v))) < 8 {
				t.Errorf("Secret %s key %s: %d bytes, too short to be a secret", name, k, len(v))
			}
			secrets = append(secrets, strings.TrimSpace(string(v)))
		}
		for _, v := range s.StringData {
			secrets = append(secrets, strings.TrimSpace(v))
		}
	}
	leak := func(where, text string) {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("a secret value appears in %s", where)
			}
		}
	}
	for name, cm := range o.configMaps {
		for k, v := range cm.Data {
			leak("ConfigMap "+name+" "+k, v)
		}
	}
	for name, st := range o.statefulSets {
		p := st.Spec.Template.Spec
		for _, c := range append(p.InitContainers, p.Containers...) {
			where := name + "/" + c.Name
			leak(where+" args", strings.Join(c.Args, " "))
			leak(where+" command", strings.Join(c.Command, " "))
			for _, e := range c.Env {
				leak(where+" env "+e.Name, e.Value)
			}
		}
		leak(name+" annotations", fmt.Sprint(st.Spec.Template.Annotations))
	}
}

// checkPodHardening: the restricted Pod Security Standard, resources set.
func checkPodHardening(t *testing.T, name string, p *corev1.PodSpec) {
	t.Helper()
	psc := p.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod must run as a non-root user", name)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccomp profile must be RuntimeDefault", name)
	}
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		t.Errorf("%s: no service account token is needed", name)
	}
	for _, c := range append(p.InitContainers, p.Containers...) {
		sc := c.SecurityContext
		where := name + "/" + c.Name
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem must be read-only", where)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: privilege escalation must be off", where)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: must drop ALL capabilities and add none", where)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: needs CPU and memory requests and a memory limit: %+v", where, c.Resources)
		}
	}
}

func (o *objects) statefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	s, ok := o.statefulSets[name]
	if !ok {
		t.Fatalf("no StatefulSet %s (have %v)", name, keys(o.statefulSets))
	}
	return s
}

func (o *objects) secret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s, ok := o.secrets[name]
	if !ok {
		t.Fatalf("no Secret %s (have %v)", name, keys(o.secrets))
	}
	return s
}

// serverArgs are the server container's flags; its first argument must be
// the server command.
func (o *objects) serverArgs(t *testing.T) map[string]string {
	t.Helper()
	c := containerNamed(t, &o.statefulSet(t, server).Spec.Template.Spec, "server")
	if len(c.Command) != 1 || c.Command[0] != "/usr/bin/npanel" || len(c.Args) == 0 || c.Args[0] != "server" {
		t.Fatalf("server container runs %q %q, want /usr/bin/npanel server ...", c.Command, c.Args)
	}
	return flagMap(c.Args[1:])
}

// flagMap maps --name=value (or a bare --name to "") arguments.
func flagMap(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		m[k] = v
	}
	return m
}

func containerNamed(t *testing.T, p *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func volumeNamed(t *testing.T, p *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	t.Fatalf("no volume %s", name)
	return nil
}

func mountAt(c *corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func envNamed(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func findPort(cs []corev1.Container, name string) *corev1.ContainerPort {
	for _, c := range cs {
		for i := range c.Ports {
			if c.Ports[i].Name == name {
				return &c.Ports[i]
			}
		}
	}
	return nil
}

func containerPort(t *testing.T, c *corev1.Container, name string) int {
	t.Helper()
	p := findPort([]corev1.Container{*c}, name)
	if p == nil {
		t.Fatalf("container %s has no port %s", c.Name, name)
	}
	return int(p.ContainerPort)
}

func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	return containerPort(t, c, p.StrVal)
}

func listenPort(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return n
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM certificate in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// parseGoMemLimit reads a GOMEMLIMIT value: bytes with an optional B,
// KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(t *testing.T, v string) int64 {
	t.Helper()
	mult := int64(1)
	for i, suf := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if strings.HasSuffix(v, suf) {
			v, mult = strings.TrimSuffix(v, suf), int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, "B"), 10, 64)
	if err != nil {
		t.Fatalf("GOMEMLIMIT %q: %v", v, err)
	}
	return n * mult
}

func deref(p *int32) int32 {
	if p == nil {
		return 1 // the API's default
	}
	return *p
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
