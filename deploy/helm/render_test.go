package helm

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../../charts/npanel"
	releaseName = "np"
	namespace   = "hosting"
	// Test builds of Helm assume Kubernetes 1.20, older than the chart's
	// kubeVersion; say which one is meant.
	kubeVersion = "v1.33.0"
)

var externalValues = filepath.Join(chartDir, "ci", "external-etcd-values.yaml")

// readValues merges the files in order, as helm -f does.
func readValues(t *testing.T, files ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(f)
		if err != nil {
			t.Fatalf("values %s: %v", f, err)
		}
		vals = mergeMaps(vals, v)
	}
	return vals
}

func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bv, ok := v.(map[string]any); ok {
			if av, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(av, bv)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// renderManifest renders the chart as `helm template` does: an install in
// client-only dry-run mode.
func renderManifest(t *testing.T, vals map[string]any) (string, error) {
	t.Helper()
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(action.NewConfiguration())
	inst.DryRunStrategy = action.DryRunClient
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.Replace = true
	inst.KubeVersion = kv
	rel, err := inst.Run(loadChart(t), vals)
	if err != nil {
		return "", err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("install returned a %T", rel)
	}
	return r.Manifest, nil
}

// objects is a rendered chart, decoded.
type objects struct {
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	configMaps   map[string]*corev1.ConfigMap
	accounts     map[string]*corev1.ServiceAccount
	pdbs         map[string]*policyv1.PodDisruptionBudget
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifest decodes every document strictly into the API type of its
// kind: an unknown or misspelt field, a duplicate key or a kind the test
// does not know is an error.
func decodeManifest(manifest string) (*objects, error) {
	o := &objects{
		statefulSets: map[string]*appsv1.StatefulSet{},
		deployments:  map[string]*appsv1.Deployment{},
		services:     map[string]*corev1.Service{},
		secrets:      map[string]*corev1.Secret{},
		configMaps:   map[string]*corev1.ConfigMap{},
		accounts:     map[string]*corev1.ServiceAccount{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
	}
	for i, doc := range docSep.Split(manifest, -1) {
		if isEmptyDoc(doc) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var (
			obj   metav1.Object
			store func()
		)
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 StatefulSet":
			v := &appsv1.StatefulSet{}
			obj, store = v, func() { o.statefulSets[v.Name] = v }
		case "apps/v1 Deployment":
			v := &appsv1.Deployment{}
			obj, store = v, func() { o.deployments[v.Name] = v }
		case "v1 Service":
			v := &corev1.Service{}
			obj, store = v, func() { o.services[v.Name] = v }
		case "v1 Secret":
			v := &corev1.Secret{}
			obj, store = v, func() { o.secrets[v.Name] = v }
		case "v1 ConfigMap":
			v := &corev1.ConfigMap{}
			obj, store = v, func() { o.configMaps[v.Name] = v }
		case "v1 ServiceAccount":
			v := &corev1.ServiceAccount{}
			obj, store = v, func() { o.accounts[v.Name] = v }
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			obj, store = v, func() { o.pdbs[v.Name] = v }
		default:
			return nil, fmt.Errorf("document %d: no API type for %q %q:\n%s", i, tm.APIVersion, tm.Kind, doc)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w\n%s", i, tm.Kind, err, doc)
		}
		if obj.GetName() == "" {
			return nil, fmt.Errorf("document %d (%s) has no name", i, tm.Kind)
		}
		store()
	}
	return o, nil
}

// isEmptyDoc reports a document of comments and blank lines only (Helm's
// "# Source:" headers of templates that rendered nothing).
func isEmptyDoc(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// render renders and decodes the chart with the values files, failing the
// test on any error.
func render(t *testing.T, files ...string) *objects {
	t.Helper()
	manifest, err := renderManifest(t, readValues(t, files...))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	o, err := decodeManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
