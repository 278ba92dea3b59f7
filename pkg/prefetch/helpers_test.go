package prefetch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

func TestMain(m *testing.M) {
	if os.Getenv("PREFETCH_DEBUG") != "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	kubetest.Main(m)
}

// agentAdapter is cmd/cache-agent's adapter: *agent.Agent as prefetch.Agent.
type agentAdapter struct{ a *agent.Agent }

func (x agentAdapter) Ensure(ctx context.Context, ref model.Ref, wait time.Duration) (prefetch.Result, error) {
	p, err := x.a.Ensure(ctx, ref, agentapi.EnsureOptions{Wait: wait})
	return prefetch.Result{Ready: p.State == agentapi.StateReady, Hit: p.Hit, Revision: p.Revision,
		TotalBytes: p.TotalBytes, FetchedBytes: p.FetchedBytes, Started: p.Started, Finished: p.Finished}, err
}
func (x agentAdapter) Pin(ref model.Ref, holder string) error {
	_, err := x.a.Pin(ref, holder)
	return err
}
func (x agentAdapter) Unpin(ref model.Ref, holder string) error { return x.a.Unpin(ref, holder) }
func (x agentAdapter) Models() []agentapi.ModelStatus           { return x.a.Status().Models }
func (x agentAdapter) Changed() <-chan struct{}                 { return x.a.Changed() }
func (x agentAdapter) AllowedIn(ref model.Ref, ns string) error { return x.a.AllowedIn(ref, ns) }
func (x agentAdapter) Status() agentapi.StatusReport            { return x.a.Status() }

// env is a real API server (shared by the package's tests), a real S3
// server with a bucket "models", and a namespace of the test's own.
type env struct {
	kube kubernetes.Interface
	s3   *s3test.Server
	gate *s3test.Proxy // in front of s3: the nodes' source "gated"
	ns   string
	// dyn, once useModelCaches set it, makes the nodes' controllers watch
	// ModelCaches and report on ModelCacheNodes.
	dyn dynamic.Interface
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ks := kubetest.Start(t)
	e := &env{kube: ks.Client(t), s3: s3test.Start(t)}
	e.s3.CreateBucket(t, "models")
	e.gate = s3test.NewCountingProxy(t, e.s3.Endpoint)
	e.ns = strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(e.ns) > 40 {
		e.ns = e.ns[:40]
	}
	e.ns = fmt.Sprintf("%s-%d", strings.Trim(e.ns, "-"), time.Now().UnixNano()%100000)
	if _, err := e.kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No namespace controller runs, so the workloads go one by one: a later
	// test that watches every namespace sees only its own.
	t.Cleanup(func() {
		ctx := context.Background()
		e.kube.AppsV1().Deployments(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		e.kube.AppsV1().StatefulSets(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	})
	return e
}

// putModel stores a small model under models/NAME and returns its ref.
func (e *env) putModel(t *testing.T, name string, seed int64) string {
	t.Helper()
	e.s3.Put(t, "models", name+"/weights.bin", s3test.RandomBytes(uint64(seed), 1<<20+int(seed)))
	e.s3.Put(t, "models", name+"/config.json", []byte(fmt.Sprintf(`{"seed":%d}`, seed)))
	return "s3://models/" + name + "?source=test"
}

// node is one Kubernetes Node with its own real agent, cache and controller.
type node struct {
	name    string
	agent   *agent.Agent
	store   *cache.Store
	fetcher *fetch.Fetcher // the agent's: lists a model's current revision
	resync  time.Duration  // of the next startController; 300 ms if zero
	stop    func()         // stops the controller
	// resources, if set, is the controller's Options.Resources.
	resources dynamic.Interface
}

// startNode creates the Node object and runs an agent and a prefetch
// controller for it until the test ends.
func (e *env) startNode(t *testing.T, suffix string, labels map[string]string, taints ...corev1.Taint) *node {
	t.Helper()
	return e.startNodeCapacity(t, suffix, labels, 1<<30, taints...)
}

// startNodeCapacity is startNode with a cache of capacity bytes.
func (e *env) startNodeCapacity(t *testing.T, suffix string, labels map[string]string, capacity int64, taints ...corev1.Taint) *node {
	t.Helper()
	name := e.ns + "-" + suffix
	ctx := context.Background()
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.NodeSpec{Taints: taints}}
	if _, err := e.kube.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	src := fetch.Source{Endpoint: e.s3.Endpoint, Region: e.s3.Region, PathStyle: true, AccessKeyID: e.s3.AccessKey, SecretAccessKey: e.s3.SecretKey}
	gated := src
	gated.Endpoint = e.gate.URL()
	restricted := src
	restricted.Namespaces = []string{"team-elsewhere"}
	f, err := fetch.New(map[string]fetch.Source{"test": src, "gated": gated, "restricted": restricted}, fetch.WithPartSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, agent: agent.New(store, f, nil, nil), store: store, fetcher: f, resources: e.dyn}
	t.Cleanup(func() {
		n.stop()
		n.agent.Close()
		store.Close()
		e.kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	n.startController(t, e.kube, e.ns)
	return n
}

// startController runs a prefetch controller for n with client, watching
// namespace ("" for all), until n.stop or the end of the test.
func (n *node) startController(t *testing.T, client kubernetes.Interface, namespace string) {
	t.Helper()
	resync := n.resync
	if resync == 0 {
		resync = 300 * time.Millisecond
	}
	c, err := prefetch.New(client, agentAdapter{n.agent}, prefetch.Options{NodeName: n.name, Namespace: namespace,
		Resync: resync, RetryAfter: 500 * time.Millisecond, SyncTimeout: 20 * time.Second,
		Resources: n.resources, ReportInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx); err != nil {
			t.Errorf("controller for %s: %v", n.name, err)
		}
	}()
	n.stop = func() { cancel(); wg.Wait() }
}

type podSpec func(*corev1.PodSpec)

func deployment(name, annotation string, replicas int32, opts ...podSpec) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{prefetch.AnnotationPrefetch: annotation}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name, opts...),
		},
	}
	return d
}

func podTemplate(app string, opts ...podSpec) corev1.PodTemplateSpec {
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: "example.com/server:1"}}},
	}
	for _, o := range opts {
		o(&tmpl.Spec)
	}
	return tmpl
}

func nodeSelector(kv ...string) podSpec {
	return func(s *corev1.PodSpec) {
		s.NodeSelector = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			s.NodeSelector[kv[i]] = kv[i+1]
		}
	}
}

func requiredAffinity(key string, op corev1.NodeSelectorOperator, values ...string) podSpec {
	return func(s *corev1.PodSpec) {
		s.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}},
			}}},
		}}
	}
}

func toleration(tol corev1.Toleration) podSpec {
	return func(s *corev1.PodSpec) { s.Tolerations = append(s.Tolerations, tol) }
}

func (e *env) createDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	if _, err := e.kube.AppsV1().Deployments(e.ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) setAnnotation(t *testing.T, name, value string) {
	t.Helper()
	v := any(value)
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{prefetch.AnnotationPrefetch: v}}})
	if _, err := e.kube.AppsV1().Deployments(e.ns).Patch(context.Background(), name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// eventually retries fn until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = fn(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}

func mustRef(t *testing.T, s string) model.Ref {
	t.Helper()
	r, err := model.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pins returns the holders of every revision n holds of ref, and whether
// ref is held at all.
func (n *node) pins(t *testing.T, ref string) ([]string, bool) {
	t.Helper()
	id := mustRef(t, ref).ID()
	var out []string
	held := false
	for _, m := range n.store.Status().Models {
		if mustRef(t, m.Ref).ID() == id {
			held = true
			out = append(out, m.Pins...)
		}
	}
	slices.Sort(out)
	return out, held
}

func (n *node) waitPins(t *testing.T, ref string, want ...string) {
	t.Helper()
	slices.Sort(want)
	eventually(t, 30*time.Second, fmt.Sprintf("%s pins of %s", n.name, ref), func() error {
		got, held := n.pins(t, ref)
		if !held {
			return errors.New("not held")
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("pins %v, want %v", got, want)
		}
		return nil
	})
}

// warm returns the node's warm-model labels and its models annotation.
func (e *env) warm(t *testing.T, name string) (map[string]string, map[string]string) {
	t.Helper()
	n, err := e.kube.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for k, v := range n.Labels {
		if strings.HasPrefix(k, prefetch.LabelPrefix) {
			labels[k] = v
		}
	}
	ann := map[string]string{}
	if v, ok := n.Annotations[prefetch.AnnotationModels]; ok {
		if err := json.Unmarshal([]byte(v), &ann); err != nil {
			t.Fatalf("annotation %s=%q: %v", prefetch.AnnotationModels, v, err)
		}
	}
	return labels, ann
}

// waitWarm waits until exactly refs are labelled ready on the node and
// listed in its annotation.
func (e *env) waitWarm(t *testing.T, name string, refs ...string) {
	t.Helper()
	wantLabels, wantAnn := map[string]string{}, map[string]string{}
	for _, r := range refs {
		ref := mustRef(t, r)
		wantLabels[prefetch.LabelKey(ref)] = prefetch.LabelReady
		wantAnn[ref.String()] = prefetch.LabelKey(ref)
	}
	eventually(t, 30*time.Second, "warm labels of "+name, func() error {
		labels, ann := e.warm(t, name)
		if fmt.Sprint(labels) != fmt.Sprint(wantLabels) || fmt.Sprint(ann) != fmt.Sprint(wantAnn) {
			return fmt.Errorf("labels %v annotation %v; want %v and %v", labels, ann, wantLabels, wantAnn)
		}
		return nil
	})
}

// events lists the events recorded on the named object as "Reason: message".
func (e *env) events(t *testing.T, name string) []string {
	t.Helper()
	list, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	slices.Sort(out)
	return out
}

// waitEvent waits for an event on name whose "Reason: message" contains
// every one of parts.
func (e *env) waitEvent(t *testing.T, name string, parts ...string) string {
	t.Helper()
	var found string
	eventually(t, 30*time.Second, fmt.Sprintf("event %q on %s", parts, name), func() error {
		evs := e.events(t, name)
		for _, ev := range evs {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(ev, p)
			}
			if ok {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("events: %q", evs)
	})
	return found
}

func holder(kind, ns, name string) string {
	return prefetch.HolderPrefix + kind + "/" + ns + "/" + name
}
