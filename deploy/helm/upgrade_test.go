package helm

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// clusterSecrets answers the chart's lookup calls from a fake cluster that
// holds the given Secrets, as an upgrade's render sees the installed ones.
type clusterSecrets struct {
	client *dynamicfake.FakeDynamicClient
}

func (c clusterSecrets) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	if apiVersion != "v1" || kind != "Secret" {
		return nil, false, fmt.Errorf("the chart looks up %s %s; only v1 Secret is expected", apiVersion, kind)
	}
	return c.client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}), true, nil
}

func newCluster(t *testing.T, secrets map[string]*corev1.Secret) clusterSecrets {
	t.Helper()
	var objs []runtime.Object
	for _, s := range secrets {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{Object: u}
		obj.SetNamespace(namespace)
		objs = append(objs, obj)
	}
	return clusterSecrets{dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), objs...)}
}

// renderUpgrade renders the chart as helm upgrade does against a cluster
// holding the given Secrets.
func renderUpgrade(t *testing.T, cluster clusterSecrets) *objects {
	t.Helper()
	ch := loadChart(t)
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	vals, err := util.ToRenderValues(ch, map[string]any{},
		common.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 2, IsUpgrade: true}, caps)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.RenderWithClientProvider(ch, vals, cluster)
	if err != nil {
		t.Fatalf("render upgrade: %v", err)
	}
	var manifest strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(name, ".yaml") {
			fmt.Fprintf(&manifest, "---\n%s\n", files[name])
		}
	}
	o, err := decodeManifest(manifest.String())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestUpgradeKeepsGeneratedSecrets: an upgrade renders the KEK, the admin
// password and the etcd certificates the install generated, not new ones
// (genCA and randBytes would otherwise change them on every upgrade); a
// leaf certificate deleted to renew it is signed again by the kept CA.
func TestUpgradeKeepsGeneratedSecrets(t *testing.T) {
	installed := render(t).secrets
	generated := []string{server + "-kek", server + "-admin", etcd + "-ca", etcd + "-tls", etcd + "-client-tls"}

	// Each render without a cluster generates anew: equality below is the
	// lookup's doing, not chance.
	fresh := render(t).secrets
	for _, name := range generated {
		if equalData(installed[name], fresh[name]) {
			t.Fatalf("two installs generated the same %s", name)
		}
	}

	upgraded := renderUpgrade(t, newCluster(t, installed)).secrets
	for _, name := range generated {
		if !equalData(installed[name], upgraded[name]) {
			t.Errorf("upgrade changed the generated Secret %s", name)
		}
	}

	// Renewal: the members' and client certificates deleted, the CA kept.
	kept := maps.Clone(installed)
	delete(kept, etcd+"-tls")
	delete(kept, etcd+"-client-tls")
	renewed := renderUpgrade(t, newCluster(t, kept)).secrets
	ca := parseCert(t, installed[etcd+"-ca"].Data["tls.crt"])
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{etcd + "-tls", etcd + "-client-tls"} {
		s := renewed[name]
		if s == nil {
			t.Fatalf("renewal rendered no %s", name)
		}
		if equalData(installed[name], s) {
			t.Errorf("%s was not renewed", name)
		}
		if !bytes.Equal(s.Data["ca.crt"], installed[etcd+"-ca"].Data["tls.crt"]) {
			t.Errorf("renewed %s carries another CA", name)
		}
		cert := parseCert(t, s.Data["tls.crt"])
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("renewed %s is not signed by the kept CA: %v", name, err)
		}
	}
	if !equalData(installed[server+"-kek"], renewed[server+"-kek"]) {
		t.Errorf("renewing etcd certificates changed the KEK")
	}
}

func equalData(a, b *corev1.Secret) bool {
	if a == nil || b == nil {
		return false
	}
	return maps.EqualFunc(a.Data, b.Data, bytes.Equal)
}
