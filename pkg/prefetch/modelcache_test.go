package prefetch_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/modelstatus"
)

// useModelCaches installs the CRDs and makes the nodes started after it
// watch ModelCaches and write their reports.
func (e *env) useModelCaches(t *testing.T) {
	t.Helper()
	ks := kubetest.Start(t)
	ks.InstallCRDs(t)
	e.dyn = ks.Dynamic(t)
}

// startStatus runs the ModelCache status controller until the test ends.
func (e *env) startStatus(t *testing.T) {
	t.Helper()
	c := modelstatus.New(e.kube, e.dyn, modelstatus.Options{MinWriteInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("status controller: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func (e *env) createModelCache(t *testing.T, name string, spec v1alpha1.ModelCacheSpec) {
	t.Helper()
	mc := v1alpha1.ModelCache{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCache},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}, Spec: spec}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&mc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dyn.Resource(v1alpha1.ModelCaches).Namespace(e.ns).Create(context.Background(),
		&unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.deleteModelCache(name) })
}

func (e *env) deleteModelCache(name string) {
	e.dyn.Resource(v1alpha1.ModelCaches).Namespace(e.ns).Delete(context.Background(), name, metav1.DeleteOptions{})
}

func (e *env) modelCache(t *testing.T, name string) v1alpha1.ModelCache {
	t.Helper()
	u, err := e.dyn.Resource(v1alpha1.ModelCaches).Namespace(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mc v1alpha1.ModelCache
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mc); err != nil {
		t.Fatal(err)
	}
	return mc
}

// waitStatus waits until fn accepts name's status.
func (e *env) waitStatus(t *testing.T, name string, fn func(v1alpha1.ModelCacheStatus) error) v1alpha1.ModelCacheStatus {
	t.Helper()
	var st v1alpha1.ModelCacheStatus
	eventually(t, 30*time.Second, "status of modelcache "+name, func() error {
		st = e.modelCache(t, name).Status
		if err := fn(st); err != nil {
			return fmt.Errorf("%w; status %+v", err, st)
		}
		return nil
	})
	return st
}

func (e *env) nodeReport(node string) (v1alpha1.ModelCacheNodeStatus, error) {
	u, err := e.dyn.Resource(v1alpha1.ModelCacheNodes).Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return v1alpha1.ModelCacheNodeStatus{}, err
	}
	var r v1alpha1.ModelCacheNode
	err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r)
	return r.Status, err
}

func condition(st v1alpha1.ModelCacheStatus, typ string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
		return c.Status
	}
	return ""
}

// TestModelCache: a ModelCache with no Deployment brings its model to the
// nodes its selector matches (only those), pins it for itself, and its
// status counts them from the nodes' reports; a node that does not report
// yet is Pending, a namespace refused the source makes it Degraded, and
// deleting it unpins.
func TestModelCache(t *testing.T) {
	e := newEnv(t)
	e.useModelCaches(t)
	pool := map[string]string{"pool": e.ns} // no other test's nodes match
	a := e.startNode(t, "a", pool)
	b := e.startNode(t, "b", map[string]string{"pool": "other"})
	ref := e.putModel(t, "mc", 1)
	e.startStatus(t)

	e.createModelCache(t, "llama", v1alpha1.ModelCacheSpec{Model: ref, NodeSelector: pool})
	a.waitPins(t, ref, holder("modelcache", e.ns, "llama"))
	e.waitWarm(t, a.name, ref)

	var rev string
	eventually(t, 30*time.Second, "node a's report", func() error {
		r, err := e.nodeReport(a.name)
		if err != nil {
			return err
		}
		for _, m := range r.Models {
			if m.State == v1alpha1.StateReady && m.Current && strings.HasPrefix(ref, m.Ref) {
				rev = m.Revision
				return nil
			}
		}
		return fmt.Errorf("no ready entry for %s: %+v", ref, r)
	})
	st := e.waitStatus(t, "llama", func(st v1alpha1.ModelCacheStatus) error {
		if st.Ready != "1/1" || condition(st, v1alpha1.ConditionReady) != metav1.ConditionTrue {
			return fmt.Errorf("ready %q", st.Ready)
		}
		return nil
	})
	if st.Revision != rev || st.SizeBytes == 0 || len(st.Nodes) != 1 || st.Nodes[0].Node != a.name {
		t.Errorf("status %+v; want revision %s on %s", st, rev, a.name)
	}
	if _, held := b.pins(t, ref); held {
		t.Errorf("node b (pool=other) fetched %s", ref)
	}

	// A matching node whose agent has not reported: wanted, pending.
	c := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: e.ns + "-c", Labels: pool}}
	if _, err := e.kube.CoreV1().Nodes().Create(context.Background(), c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.kube.CoreV1().Nodes().Delete(context.Background(), c.Name, metav1.DeleteOptions{}) })
	e.waitStatus(t, "llama", func(st v1alpha1.ModelCacheStatus) error {
		if st.Ready != "1/2" || condition(st, v1alpha1.ConditionReady) != metav1.ConditionFalse ||
			len(st.Nodes) != 2 || st.Nodes[0].Node != c.Name || st.Nodes[0].State != v1alpha1.StatePending {
			return fmt.Errorf("want 1/2 with %s pending first", c.Name)
		}
		return nil
	})

	// A source this namespace may not use: the node refuses, the status says why.
	restricted := strings.Replace(e.putModel(t, "mc-restricted", 2), "source=test", "source=restricted", 1)
	e.createModelCache(t, "refused", v1alpha1.ModelCacheSpec{Model: restricted, NodeSelector: pool})
	e.waitStatus(t, "refused", func(st v1alpha1.ModelCacheStatus) error {
		for _, n := range st.Nodes {
			if n.Node == a.name && n.State == v1alpha1.StateFailed && strings.Contains(n.Error, "namespace") &&
				condition(st, v1alpha1.ConditionDegraded) == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node a not failed with a namespace error")
	})
	if _, held := a.pins(t, restricted); held {
		t.Errorf("node a fetched %s for a namespace its source does not allow", restricted)
	}

	// Deleting the ModelCache drops its pin; the model stays (evictable).
	e.deleteModelCache("llama")
	a.waitPins(t, ref)
}
