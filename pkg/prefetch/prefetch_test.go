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
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
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
	p, err := x.a.Ensure(ctx, ref, agent.EnsureOptions{Wait: wait})
	return prefetch.Result{Ready: p.State == agent.StateReady, Hit: p.Hit, Revision: p.Revision,
		TotalBytes: p.TotalBytes, FetchedBytes: p.FetchedBytes, Started: p.Started, Finished: p.Finished}, err
}
func (x agentAdapter) Pin(ref model.Ref, holder string) error {
	_, err := x.a.Pin(ref, holder)
	return err
}
func (x agentAdapter) Unpin(ref model.Ref, holder string) error { return x.a.Unpin(ref, holder) }
func (x agentAdapter) Models() []cache.ModelStatus              { return x.a.Status().Models }

// env is a real API server (shared by the package's tests), a real S3
// server with a bucket "models", and a namespace of the test's own.
type env struct {
	kube kubernetes.Interface
	s3   *s3test.Server
	ns   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ks := kubetest.Start(t)
	e := &env{kube: ks.Client(t), s3: s3test.Start(t)}
	e.s3.CreateBucket(t, "models")
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
	name  string
	agent *agent.Agent
	store *cache.Store
	stop  func() // stops the controller
}

// startNode creates the Node object and runs an agent and a prefetch
// controller for it until the test ends.
func (e *env) startNode(t *testing.T, suffix string, labels map[string]string, taints ...corev1.Taint) *node {
	t.Helper()
	name := e.ns + "-" + suffix
	ctx := context.Background()
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.NodeSpec{Taints: taints}}
	if _, err := e.kube.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	src := fetch.Source{Endpoint: e.s3.Endpoint, Region: e.s3.Region, PathStyle: true, AccessKeyID: e.s3.AccessKey, SecretAccessKey: e.s3.SecretKey}
	f, err := fetch.New(map[string]fetch.Source{"test": src}, fetch.WithPartSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, agent: agent.New(store, f, nil, nil), store: store}
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
	c, err := prefetch.New(client, agentAdapter{n.agent}, prefetch.Options{NodeName: n.name, Namespace: namespace,
		Resync: 300 * time.Millisecond, RetryAfter: 500 * time.Millisecond, SyncTimeout: 20 * time.Second})
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

// TestPlacement: each node's agent prefetches exactly the models of the
// workloads whose pod template could run on it (nodeSelector, required node
// affinity, taints and tolerations), replicas 0 included, pins them for the
// workload, labels and annotates its Node, and records events.
func TestPlacement(t *testing.T) {
	e := newEnv(t)
	refSel := e.putModel(t, "selector", 1)
	refAff := e.putModel(t, "affinity", 2)
	refUntol := e.putModel(t, "untolerated", 3)
	refAny := e.putModel(t, "anywhere", 4)
	refNotIn := e.putModel(t, "notin", 5)
	refWarm := e.putModel(t, "warm", 6)

	taint := corev1.Taint{Key: "dedicated", Value: "ml", Effect: corev1.TaintEffectNoSchedule}
	gpu := e.startNode(t, "gpu", map[string]string{"accel": "gpu", "zone": "a"}, taint)
	cpu := e.startNode(t, "cpu", map[string]string{"accel": "cpu", "zone": "b"})

	tolerateML := toleration(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ml", Effect: corev1.TaintEffectNoSchedule})
	// gpu only: selector matches and the taint is tolerated; replicas 0.
	e.createDeployment(t, deployment("d-selector", refSel, 0, nodeSelector("accel", "gpu"), tolerateML))
	// cpu only: required affinity (gpu also fails on its untolerated taint).
	e.createDeployment(t, deployment("d-affinity", refAff, 2, requiredAffinity("zone", corev1.NodeSelectorOpIn, "b")))
	// nowhere: selects gpu but does not tolerate its taint.
	e.createDeployment(t, deployment("d-untolerated", refUntol, 1, nodeSelector("accel", "gpu")))
	// nowhere: NotIn excludes both zones.
	e.createDeployment(t, deployment("d-notin", refNotIn, 1, requiredAffinity("zone", corev1.NodeSelectorOpNotIn, "a", "b")))
	// both: requires nodes warm with its own model, which must not keep the
	// model from coming to cold nodes.
	e.createDeployment(t, deployment("d-requires-warm", refWarm, 0,
		requiredAffinity(prefetch.LabelKey(mustRef(t, refWarm)), corev1.NodeSelectorOpIn, prefetch.LabelReady),
		toleration(corev1.Toleration{Operator: corev1.TolerationOpExists})))
	// both: a StatefulSet that tolerates every taint.
	replicas := int32(0)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "s-anywhere", Annotations: map[string]string{prefetch.AnnotationPrefetch: refAny}},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas, ServiceName: "s-anywhere",
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "s-anywhere"}},
			Template: podTemplate("s-anywhere", toleration(corev1.Toleration{Operator: corev1.TolerationOpExists}))},
	}
	if _, err := e.kube.AppsV1().StatefulSets(e.ns).Create(context.Background(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	gpu.waitPins(t, refSel, holder("deployment", e.ns, "d-selector"))
	gpu.waitPins(t, refAny, holder("statefulset", e.ns, "s-anywhere"))
	cpu.waitPins(t, refAff, holder("deployment", e.ns, "d-affinity"))
	cpu.waitPins(t, refAny, holder("statefulset", e.ns, "s-anywhere"))
	gpu.waitPins(t, refWarm, holder("deployment", e.ns, "d-requires-warm"))
	cpu.waitPins(t, refWarm, holder("deployment", e.ns, "d-requires-warm"))
	e.waitWarm(t, gpu.name, refSel, refAny, refWarm)
	e.waitWarm(t, cpu.name, refAff, refAny, refWarm)

	// Several reconciles later, nothing else was fetched on either node.
	time.Sleep(time.Second)
	for _, n := range []*node{gpu, cpu} {
		for _, ref := range []string{refUntol, refNotIn} {
			if _, held := n.pins(t, ref); held {
				t.Errorf("%s holds %s, which cannot run there", n.name, ref)
			}
		}
		for _, j := range n.agent.Jobs() {
			if j.Ref == mustRef(t, refUntol).String() || j.Ref == mustRef(t, refNotIn).String() {
				t.Errorf("%s started %s", n.name, j.Ref)
			}
		}
	}
	if _, held := gpu.pins(t, refAff); held {
		t.Errorf("gpu node holds %s", refAff)
	}
	if _, held := cpu.pins(t, refSel); held {
		t.Errorf("cpu node holds %s", refSel)
	}

	started := e.waitEvent(t, "d-selector", prefetch.ReasonStarted, gpu.name)
	done := e.waitEvent(t, "d-selector", prefetch.ReasonDone, gpu.name, "fetched in", prefetch.LabelKey(mustRef(t, refSel)))
	t.Logf("events: %s | %s", started, done)
	e.waitEvent(t, "s-anywhere", prefetch.ReasonDone, gpu.name)
	e.waitEvent(t, "s-anywhere", prefetch.ReasonDone, cpu.name)
	for _, name := range []string{"d-untolerated", "d-notin"} {
		if evs := e.events(t, name); len(evs) > 0 {
			t.Errorf("events on %s, which fits no node: %q", name, evs)
		}
	}
}

// TestPinsFollowAnnotation: a changed annotation prefetches the new model
// and drops the workload's pin on the old one, which a CSI pin still keeps;
// deleting the workload drops its pin, and nothing is deleted.
func TestPinsFollowAnnotation(t *testing.T) {
	e := newEnv(t)
	refA := e.putModel(t, "a", 10)
	refB := e.putModel(t, "b", 11)
	n := e.startNode(t, "n", nil)
	h := holder("deployment", e.ns, "server")

	e.createDeployment(t, deployment("server", refA, 3))
	n.waitPins(t, refA, h)
	// A pod of the workload mounts A through the CSI plugin.
	if _, err := n.agent.Pin(mustRef(t, refA), "csi:vol-1"); err != nil {
		t.Fatal(err)
	}

	e.setAnnotation(t, "server", refB)
	n.waitPins(t, refB, h)
	n.waitPins(t, refA, "csi:vol-1")
	e.waitWarm(t, n.name, refA, refB)
	if _, err := n.agent.Evict(mustRef(t, refA)); !errors.Is(err, cache.ErrPinned) {
		t.Fatalf("evict A while a volume mounts it: %v, want ErrPinned", err)
	}
	// The pod goes: A becomes evictable, and its label goes with it.
	if err := n.agent.Unpin(mustRef(t, refA), "csi:vol-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.agent.Evict(mustRef(t, refA)); err != nil {
		t.Fatalf("evict A once unpinned: %v", err)
	}
	e.waitWarm(t, n.name, refB)

	if err := e.kube.AppsV1().Deployments(e.ns).Delete(context.Background(), "server", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPins(t, refB) // held, unpinned
	e.waitWarm(t, n.name, refB)
	if _, err := n.agent.Pin(mustRef(t, refB), "check"); err != nil {
		t.Fatalf("B was deleted with its workload: %v", err)
	}
}

// TestLabelsFollowEviction: the warm label and annotation appear when the
// model is ready, stay after the annotation is removed (the model is still
// held, just evictable), and go once the model is evicted.
func TestLabelsFollowEviction(t *testing.T) {
	e := newEnv(t)
	ref := e.putModel(t, "m", 20)
	other := e.putModel(t, "other", 21)
	n := e.startNode(t, "n", map[string]string{"keep": "me"})

	e.createDeployment(t, deployment("server", ref+", "+other, 0))
	e.waitWarm(t, n.name, ref, other)
	labels, ann := e.warm(t, n.name)
	t.Logf("node labels %v, %s=%v", labels, prefetch.AnnotationModels, ann)

	e.setAnnotation(t, "server", other)
	n.waitPins(t, ref)
	e.waitWarm(t, n.name, ref, other) // still held

	if _, err := n.agent.Evict(mustRef(t, ref)); err != nil {
		t.Fatal(err)
	}
	e.waitWarm(t, n.name, other)

	e.setAnnotation(t, "server", "")
	n.waitPins(t, other)
	if _, err := n.agent.Evict(mustRef(t, other)); err != nil {
		t.Fatal(err)
	}
	e.waitWarm(t, n.name)
	got, err := e.kube.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Annotations[prefetch.AnnotationModels]; ok {
		t.Errorf("annotation %s left on the node", prefetch.AnnotationModels)
	}
	if got.Labels["keep"] != "me" {
		t.Errorf("other labels changed: %v", got.Labels)
	}
}

// TestBadAnnotationAndFailure: refs that do not parse give a warning event
// with the parse error (the valid ones in the same annotation still come
// down), and a download that fails gives PrefetchFailed with the reason.
func TestBadAnnotationAndFailure(t *testing.T) {
	e := newEnv(t)
	good := e.putModel(t, "good", 30)
	n := e.startNode(t, "n", nil)

	e.createDeployment(t, deployment("mixed", "ftp://models/x, "+good+", s3://models/../etc", 1))
	ev := e.waitEvent(t, "mixed", prefetch.ReasonFailed, "invalid "+prefetch.AnnotationPrefetch, "ftp://models/x", "s3://models/../etc")
	t.Logf("event: %s", ev)
	n.waitPins(t, good, holder("deployment", e.ns, "mixed"))

	e.createDeployment(t, deployment("empty", " , ", 1))
	e.waitEvent(t, "empty", prefetch.ReasonFailed, "empty")

	e.createDeployment(t, deployment("missing", "s3://no-such-bucket/m?source=test", 1))
	ev = e.waitEvent(t, "missing", prefetch.ReasonFailed, "no-such-bucket", n.name)
	t.Logf("event: %s", ev)
}

// TestRestart: a controller started over an agent that already holds
// workload pins keeps the ones still wanted (without announcing them again)
// and drops the pins of a workload deleted while it was down.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	refA := e.putModel(t, "a", 40)
	refB := e.putModel(t, "b", 41)
	n := e.startNode(t, "n", nil)
	e.createDeployment(t, deployment("keep", refA, 1))
	e.createDeployment(t, deployment("gone", refB, 1))
	n.waitPins(t, refA, holder("deployment", e.ns, "keep"))
	n.waitPins(t, refB, holder("deployment", e.ns, "gone"))
	e.waitEvent(t, "keep", prefetch.ReasonDone)

	n.stop()
	if err := e.kube.AppsV1().Deployments(e.ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.startController(t, e.kube, e.ns)
	n.waitPins(t, refB)
	n.waitPins(t, refA, holder("deployment", e.ns, "keep"))
	e.waitWarm(t, n.name, refA, refB)
	time.Sleep(time.Second) // a few reconciles
	var done int
	for _, ev := range e.events(t, "keep") {
		if strings.HasPrefix(ev, prefetch.ReasonDone) {
			done++
		}
	}
	if done != 1 {
		t.Errorf("%d PrefetchDone events on keep after a restart, want 1: %q", done, e.events(t, "keep"))
	}
}

// TestLeastPrivilege runs the controller, watching every namespace, as a
// user holding only the RBAC rules the README lists; without them Run fails
// with ErrCacheSync.
func TestLeastPrivilege(t *testing.T) {
	e := newEnv(t)
	ks := kubetest.Start(t)
	ctx := context.Background()
	user, err := kubernetes.NewForConfig(ks.UserConfig)
	if err != nil {
		t.Fatal(err)
	}
	n := e.startNode(t, "n", nil)
	n.stop() // the admin's controller; the user's runs instead

	bare, err := prefetch.New(user, agentAdapter{n.agent}, prefetch.Options{NodeName: n.name, SyncTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := bare.Run(ctx); !errors.Is(err, prefetch.ErrCacheSync) {
		t.Fatalf("Run without RBAC: %v, want ErrCacheSync", err)
	} else {
		t.Logf("without RBAC: %v", err)
	}

	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: e.ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		}}
	if _, err := e.kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: e.ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: e.ns},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: kubetest.User}}}
	if _, err := e.kube.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.kube.RbacV1().ClusterRoleBindings().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
		e.kube.RbacV1().ClusterRoles().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	n.startController(t, user, "")
	ref := e.putModel(t, "m", 50)
	e.createDeployment(t, deployment("server", ref, 0))
	n.waitPins(t, ref, holder("deployment", e.ns, "server"))
	e.waitWarm(t, n.name, ref)
	e.waitEvent(t, "server", prefetch.ReasonDone, n.name)
}
