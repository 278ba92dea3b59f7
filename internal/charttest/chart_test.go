package charttest

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The namespace of deploy/ (its kustomizations set it); the chart's objects
// go to the release's namespace.
const namespace = "modelcache"

const namespaceKey = "v1 Namespace /" + namespace

// TestChartMatchesKustomize: the chart renders the objects deploy/ renders,
// field for field but for helm's own labels, so deploy/ and the chart cannot
// drift apart. With its default values (and namespace.create, which only
// `helm template` users turn on: `helm install` needs the namespace first)
// it renders deploy/daemonset + deploy/storageclass; with
// deploy/e2e/values.yaml, the e2e overlay deploy/e2e; with webhook.enabled,
// deploy/daemonset + deploy/webhook.
func TestChartMatchesKustomize(t *testing.T) {
	tl := Find(t)
	for _, tc := range []struct {
		name      string
		kustomize []string
		values    []string
	}{
		{"defaults", []string{"deploy/daemonset", "deploy/storageclass"}, nil},
		{"e2e", []string{"deploy/e2e"}, []string{"-f", tl.Path("deploy/e2e/values.yaml")}},
		{"webhook", []string{"deploy/daemonset", "deploy/webhook"}, []string{"--set", "webhook.enabled=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := tl.Kustomize(tc.kustomize...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tl.Template(namespace, append(tc.values, "--set", "namespace.create=true")...)
			if err != nil {
				t.Fatal(err)
			}
			wantIdx := mustIndex(t, want)
			if _, ok := wantIdx[namespaceKey]; !ok {
				t.Fatalf("kubectl kustomize %v renders no %s: this test assumes deploy/ makes its namespace", tc.kustomize, namespaceKey)
			}
			compare(t, wantIdx, mustIndex(t, got))

			// Without namespace.create (helm install): the same but the Namespace.
			got, err = tl.Template(namespace, tc.values...)
			if err != nil {
				t.Fatal(err)
			}
			delete(wantIdx, namespaceKey)
			compare(t, wantIdx, mustIndex(t, got))
		})
	}
}

func compare(t *testing.T, want, got map[string]*unstructured.Unstructured) {
	t.Helper()
	if w, g := Keys(want), Keys(got); !cmp.Equal(w, g) {
		t.Fatalf("objects differ (-kustomize +chart):\n%s", cmp.Diff(w, g))
	}
	equal := true
	for _, k := range Keys(want) {
		w, g := WithoutHelmLabels(want[k]).Object, WithoutHelmLabels(got[k]).Object
		if d := cmp.Diff(w, g); d != "" {
			t.Errorf("%s differs (-kustomize +chart):\n%s", k, d)
			equal = false
		}
	}
	if !equal {
		return
	}
	t.Logf("%d objects equal: %s", len(want), strings.Join(Keys(want), ", "))
}

func mustIndex(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	m, err := Index(objs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestChartLint: `helm lint --strict` passes with the default values and
// with the e2e values.
func TestChartLint(t *testing.T) {
	tl := Find(t)
	for name, args := range map[string][]string{
		"defaults": nil,
		"e2e":      {"-f", tl.Path("deploy/e2e/values.yaml")},
		"webhook":  {"--set", "webhook.enabled=true"},
	} {
		out, err := tl.Lint(args...)
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

// TestChartSources: inline sources become the Secret the pods mount, byte for
// byte, and a change of them restarts the pods (the agent reads the file
// once); without them the chart renders no Secret and mounts the named one.
func TestChartSources(t *testing.T) {
	tl := Find(t)
	sources := "sources:\n  local:\n    endpoint: http://127.0.0.1:7070\n    region: us-east-1\n    pathStyle: true\n"
	file := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(file, []byte(sources), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := tl.Template(namespace, "--set-file", "sources.inline="+file, "--set", "sources.secretName=s3-sources")
	if err != nil {
		t.Fatal(err)
	}
	m := mustIndex(t, objs)
	sec, ok := m["v1 Secret "+namespace+"/s3-sources"]
	if !ok {
		t.Fatalf("no Secret s3-sources among %v", Keys(m))
	}
	enc, _, _ := unstructured.NestedString(sec.Object, "data", "sources.yaml")
	if dec, err := base64.StdEncoding.DecodeString(enc); err != nil || string(dec) != sources {
		t.Errorf("Secret's sources.yaml = %q (%v), want %q", dec, err, sources)
	}
	ds := m["apps/v1 DaemonSet "+namespace+"/modelcache-node"]
	if got := secretVolume(t, ds); got != "s3-sources" {
		t.Errorf("the DaemonSet mounts the Secret %q, want s3-sources", got)
	}
	sum, _, _ := unstructured.NestedString(ds.Object, "spec", "template", "metadata", "annotations", "checksum/sources")
	if want := fmt.Sprintf("%x", sha256.Sum256([]byte(sources))); sum != want {
		t.Errorf("pod annotation checksum/sources = %q, want %q", sum, want)
	}

	objs, err = tl.Template(namespace, "--set", "sources.optional=true")
	if err != nil {
		t.Fatal(err)
	}
	m = mustIndex(t, objs)
	for k := range m {
		if strings.Contains(k, " Secret ") {
			t.Errorf("no inline sources, yet the chart renders %s", k)
		}
	}
	ds = m["apps/v1 DaemonSet "+namespace+"/modelcache-node"]
	if got := secretVolume(t, ds); got != "modelcache-sources" {
		t.Errorf("the DaemonSet mounts the Secret %q, want modelcache-sources", got)
	}
	if opt, _, _ := unstructured.NestedBool(volume(t, ds, "sources"), "secret", "optional"); !opt {
		t.Error("sources.optional=true: the Secret volume is not optional")
	}
}

// TestChartStorageClassDisabled: without the StorageClass the chart renders
// neither it nor its provisioner and the provisioner's RBAC.
func TestChartStorageClassDisabled(t *testing.T) {
	tl := Find(t)
	objs, err := tl.Template(namespace, "--set", "storageClass.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	m := mustIndex(t, objs)
	for _, k := range Keys(m) {
		if strings.Contains(k, "modelcache-controller") || strings.Contains(k, " StorageClass ") {
			t.Errorf("storageClass.enabled=false renders %s", k)
		}
	}
	if _, ok := m["apps/v1 DaemonSet "+namespace+"/modelcache-node"]; !ok {
		t.Errorf("no DaemonSet among %v", Keys(m))
	}
}

// TestChartNamespaceGuard: namespace.create refuses to label a namespace
// that is not the chart's own (default, kube-system, …) privileged.
func TestChartNamespaceGuard(t *testing.T) {
	tl := Find(t)
	_, err := tl.Template("default", "--set", "namespace.create=true")
	if err == nil || !strings.Contains(err.Error(), `would label the namespace "default" privileged`) {
		t.Fatalf("helm template --namespace default --set namespace.create=true: err = %v, want the chart's refusal", err)
	}
}

func volume(t *testing.T, ds *unstructured.Unstructured, name string) map[string]any {
	t.Helper()
	vols, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "volumes")
	for _, v := range vols {
		if m, ok := v.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	t.Fatalf("the DaemonSet has no volume %q", name)
	return nil
}

func secretVolume(t *testing.T, ds *unstructured.Unstructured) string {
	t.Helper()
	s, _, _ := unstructured.NestedString(volume(t, ds, "sources"), "secret", "secretName")
	return s
}

// TestChartValuesSchema: values.schema.json refuses a misspelt or misplaced
// value instead of ignoring it, and a value of the wrong type.
func TestChartValuesSchema(t *testing.T) {
	tl := Find(t)
	for _, set := range []string{"cache.capcity=1GiB", "capacity=1GiB", "plugin.metrics.port=x", "image.pullPolicy=Sometimes"} {
		if _, err := tl.Template(namespace, "--set", set); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("--set %s: err = %v, want a values schema error", set, err)
		}
	}
}
