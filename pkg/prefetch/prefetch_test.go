package prefetch_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

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
// user holding only the RBAC rules docs/prefetch.md lists; without them Run fails
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
