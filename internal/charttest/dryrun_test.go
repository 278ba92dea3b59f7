package charttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
	mapper, dyn := dryRunClients(t, srv)
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
			// A namespace per render: the first one's exists for real by the
			// time the second one's Namespace object is sent.
			ns := "dryrun-" + name
			objs, err := tl.Template(ns, append(values, "--set", "namespace.create=true", "--set-file", "sources.inline="+sources)...)
			if err != nil {
				t.Fatal(err)
			}
			kinds := dryRunAll(t, srv, mapper, dyn, ns, objs)
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

// dryRunClients are what a dry run of arbitrary objects needs: a mapper
// from kinds to resources (by discovery) and a dynamic client.
func dryRunClients(t *testing.T, srv *kubetest.Server) (meta.RESTMapper, dynamic.Interface) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), dyn
}

// dryRunAll sends objs (cluster-scoped first, then ns, then the
// namespaced ones) as strict dry-run creates and counts the kinds accepted.
func dryRunAll(t *testing.T, srv *kubetest.Server, mapper meta.RESTMapper, dyn dynamic.Interface, ns string, objs []*unstructured.Unstructured) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	// Cluster-scoped objects first (the Namespace among them, while it
	// does not exist yet), then the namespace itself, then the rest.
	for _, pass := range []bool{false, true} {
		if pass {
			ensureNamespace(t, srv.Client(t), ns)
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
	return kinds
}

// TestKustomizeWebhookDryRun: deploy/webhook (the StorageClass with the
// pod webhook on) is accepted by a real kube-apiserver, strictly.
func TestKustomizeWebhookDryRun(t *testing.T) {
	tl := Find(t)
	srv := kubetest.Start(t)
	mapper, dyn := dryRunClients(t, srv)
	objs, err := tl.Kustomize("deploy/webhook")
	if err != nil {
		t.Fatal(err)
	}
	kinds := dryRunAll(t, srv, mapper, dyn, namespaceOf(objs), objs)
	for _, k := range []string{"MutatingWebhookConfiguration", "Service", "Deployment", "ClusterRole", "Role"} {
		if kinds[k] == 0 {
			t.Errorf("no %s was accepted (accepted: %v)", k, kinds)
		}
	}
}

// namespaceOf is the namespace of the first namespaced object.
func namespaceOf(objs []*unstructured.Unstructured) string {
	for _, o := range objs {
		if o.GetNamespace() != "" {
			return o.GetNamespace()
		}
	}
	return "default"
}

func ensureNamespace(t *testing.T, c kubernetes.Interface, ns string) {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
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

// TestChartHelmInstall: `helm install` as the README and e2e/run.sh run it
// (--create-namespace, sources from a file) against a real kube-apiserver,
// then `helm uninstall`. No kubelet or controllers run here, so no pod
// starts: this checks helm's side (release storage in a namespace it
// creates, objects created, the sources Secret) that `helm template` cannot.
func TestChartHelmInstall(t *testing.T) {
	tl := Find(t)
	srv := kubetest.Start(t)
	dir := t.TempDir()
	kubeconfig := srv.Kubeconfig(t)
	sources := filepath.Join(dir, "sources.yaml")
	src := exampleSources(t, tl)
	if err := os.WriteFile(sources, src, 0o600); err != nil {
		t.Fatal(err)
	}
	// A namespace of its own: none can be deleted here (no namespace controller).
	const ns = "modelcache-install"
	out, err := tl.helm("install", Release, tl.Chart(), "--kubeconfig", kubeconfig, "--namespace", ns, "--create-namespace",
		"-f", tl.Path("deploy/e2e/values.yaml"), "--set-file", "sources.inline="+sources)
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "secretAccessKey") {
		t.Errorf("helm install printed the sources:\n%s", out)
	}
	ctx := context.Background()
	kc := srv.Client(t)
	if _, err := kc.AppsV1().DaemonSets(ns).Get(ctx, "modelcache-node", metav1.GetOptions{}); err != nil {
		t.Errorf("DaemonSet: %v", err)
	}
	if _, err := kc.AppsV1().Deployments(ns).Get(ctx, "modelcache-controller", metav1.GetOptions{}); err != nil {
		t.Errorf("Deployment: %v", err)
	}
	if _, err := kc.StorageV1().CSIDrivers().Get(ctx, "modelcache.csi.io", metav1.GetOptions{}); err != nil {
		t.Errorf("CSIDriver: %v", err)
	}
	sec, err := kc.CoreV1().Secrets(ns).Get(ctx, "modelcache-sources", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("sources Secret: %v", err)
	}
	if got := sec.Data["sources.yaml"]; string(got) != string(src) {
		t.Errorf("sources Secret holds %d bytes that differ from the %d of the file", len(got), len(src))
	}

	if out, err := tl.helm("uninstall", Release, "--kubeconfig", kubeconfig, "--namespace", ns); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if _, err := kc.StorageV1().CSIDrivers().Get(ctx, "modelcache.csi.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("CSIDriver after helm uninstall: %v, want NotFound", err)
	}
}

// TestExamplesDryRun: every object of deploy/examples whose API the server
// has (an InferenceService needs KServe's CRDs: skipped) is accepted by a
// real kube-apiserver as a strict dry-run create.
func TestExamplesDryRun(t *testing.T) {
	tl := Find(t)
	srv := kubetest.Start(t)
	srv.InstallCRDs(t) // the ModelCache example
	mapper, dyn := dryRunClients(t, srv)
	files, err := filepath.Glob(tl.Path("deploy/examples/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	ensureNamespace(t, srv.Client(t), "examples")
	// No controller-manager here to make the namespace's default ServiceAccount.
	if _, err := srv.Client(t).CoreV1().ServiceAccounts("examples").Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
			if err != nil {
				t.Logf("%s: %s: not served here (%v)", filepath.Base(f), Key(o), err)
				continue
			}
			var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ri = dyn.Resource(m.Resource).Namespace("examples")
			}
			if _, err := ri.Create(context.Background(), o, metav1.CreateOptions{
				DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}); err != nil {
				t.Errorf("%s: dry-run create %s: %v", filepath.Base(f), Key(o), err)
			}
		}
	}
}
