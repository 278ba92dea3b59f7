package charttest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/modelcache/modelcache/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// TestChartServerDryRun sends every object the chart renders, with the
// default values and with the e2e values, to a real kube-apiserver as a
// dry-run create with strict field validation: a field the API does not
// know, a wrong type or a value its validation refuses fails the test.
// Nothing is stored but the namespace the namespaced objects need (the
// NamespaceLifecycle admission refuses objects in a namespace that does not
// exist, dry-run or not).
func TestChartServerDryRun(t *testing.T) {
	tl := Find(t)
	srv := kubetest.Start(t)
	dc, err := discovery.NewDiscoveryClientForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The example sources of deploy/ as inline sources, so the Secret is sent too.
	sources := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(sources, exampleSources(t, tl), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, values := range map[string][]string{
		"defaults": nil,
		"e2e":      {"-f", tl.Path("deploy/e2e/values.yaml")},
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := tl.Template(namespace, append(values, "--set", "namespace.create=true", "--set-file", "sources.inline="+sources)...)
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]int{}
			// Cluster-scoped objects first (the Namespace among them, while it
			// does not exist yet), then the namespace itself, then the rest.
			for _, pass := range []bool{false, true} {
				if pass {
					ensureNamespace(t, srv.Client(t))
				}
				for _, o := range objs {
					m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
					if err != nil {
						t.Fatalf("%s: %v", Key(o), err)
					}
					namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
					if namespaced != pass {
						continue
					}
					var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
					if namespaced {
						ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
					}
					_, err = ri.Create(context.Background(), o, metav1.CreateOptions{
						DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict})
					if err != nil {
						t.Errorf("dry-run create %s: %v", Key(o), err)
						continue
					}
					kinds[o.GetKind()]++
				}
			}
			for _, k := range []string{"Namespace", "CSIDriver", "StorageClass", "ServiceAccount", "ClusterRole",
				"ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet", "Deployment", "Secret"} {
				if kinds[k] == 0 {
					t.Errorf("no %s was accepted (accepted: %v)", k, kinds)
				}
			}
			t.Logf("accepted by kube-apiserver (dry run): %v", kinds)
		})
	}
}

func ensureNamespace(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// exampleSources is sources.yaml of deploy/daemonset/sources-secret.example.yaml.
func exampleSources(t *testing.T, tl Tools) []byte {
	t.Helper()
	b, err := os.ReadFile(tl.Path("deploy/daemonset/sources-secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(b)
	if err != nil || len(objs) != 1 {
		t.Fatalf("sources-secret.example.yaml: %v (%d objects)", err, len(objs))
	}
	s, ok, _ := unstructured.NestedString(objs[0].Object, "stringData", "sources.yaml")
	if !ok || s == "" {
		t.Fatal("sources-secret.example.yaml has no stringData sources.yaml")
	}
	return []byte(s)
}
