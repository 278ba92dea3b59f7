package prefetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// Issue 4's lifecycle of a prefetched model on one node, against a real API
// server and a real S3 server: a new revision in the annotation moves the
// workload's pin while a mounted old revision stays pinned by its volume;
// several workloads naming one model each hold a pin; a workload that stops
// fitting the node lets go; LRU eviction takes the warm label off the node.

// TestNewRevision: the annotation moves from one exact revision to the next.
// The new revision is fetched and pinned for the workload; the old one keeps
// only the volume's pin of the pod that still mounts it (it cannot be
// evicted), and once that goes it is evictable and loses its label.
func TestNewRevision(t *testing.T) {
	e := newEnv(t)
	ref := e.putModel(t, "m", 60)
	n := e.startNode(t, "n", nil)
	h := holder("deployment", e.ns, "server")

	e.createDeployment(t, deployment("server", ref, 0))
	n.waitPins(t, ref, h)
	// The label of ref is only kept later if the node was labelled before
	// the annotation moves on (a label is for a desired or an already
	// labelled model); under load the pin can come well before it.
	e.waitWarm(t, n.name, ref)
	rev1 := n.current(t, ref)
	ref1 := ref + "&revision=" + rev1
	e.setAnnotation(t, "server", ref1)
	n.waitRevisionPins(t, ref, rev1, h)
	e.waitWarm(t, n.name, ref, ref1)
	// A pod of the workload mounts revision 1 through the CSI plugin.
	if _, err := n.agent.Pin(mustRef(t, ref1), "csi:vol-1"); err != nil {
		t.Fatal(err)
	}

	// New weights in the bucket, named by their revision.
	weights2 := s3test.RandomBytes(61, 1<<20+61)
	e.s3.Put(t, "models", "m/weights.bin", weights2)
	man, err := n.fetcher.List(context.Background(), mustRef(t, ref).Location(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rev2 := man.Revision()
	if rev2 == rev1 {
		t.Fatalf("new weights, same revision %s", rev1)
	}
	ref2 := ref + "&revision=" + rev2
	e.setAnnotation(t, "server", ref2)

	n.waitRevisionPins(t, ref, rev2, h)
	n.waitRevisionPins(t, ref, rev1, "csi:vol-1")
	e.waitEvent(t, "server", prefetch.ReasonStarted, mustRef(t, ref2).String())
	e.waitEvent(t, "server", prefetch.ReasonDone, "revision "+rev2, "fetched in", prefetch.LabelKey(mustRef(t, ref2)))
	e.waitWarm(t, n.name, ref, ref1, ref2)
	m2, err := n.store.Lookup(mustRef(t, ref2))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(m2.Path, "weights.bin")); err != nil || !bytes.Equal(got, weights2) {
		t.Errorf("revision %s in %s: not the new weights (%v)", rev2, m2.Path, err)
	}
	if _, err := n.store.Evict(mustRef(t, ref), rev1); !errors.Is(err, cache.ErrPinned) {
		t.Fatalf("evict revision 1 while a volume mounts it: %v, want ErrPinned", err)
	}

	// The pod goes: revision 1 is evictable, and its label goes with it.
	if err := n.agent.Unpin(mustRef(t, ref1), "csi:vol-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.store.Evict(mustRef(t, ref), rev1); err != nil {
		t.Fatalf("evict revision 1 once unmounted: %v", err)
	}
	e.waitWarm(t, n.name, ref, ref2)
	n.waitRevisionPins(t, ref, rev2, h)
}

// TestSharedModel: two workloads naming one model each pin it. Deleting
// one (a foreground delete: it lingers, being deleted) leaves the other's pin; deleting the last one while a pod mounts the
// model leaves the volume's pin; nothing is deleted in either step.
func TestSharedModel(t *testing.T) {
	e := newEnv(t)
	ref := e.putModel(t, "shared", 70)
	n := e.startNode(t, "n", nil)
	a, b := holder("deployment", e.ns, "a"), holder("deployment", e.ns, "b")

	e.createDeployment(t, deployment("a", ref, 0))
	n.waitPins(t, ref, a)
	e.createDeployment(t, deployment("b", ref+", "+ref, 2)) // a duplicate counts once
	n.waitPins(t, ref, a, b)
	// b came after the download: its event says so instead of taking credit for a's.
	ev := e.waitEvent(t, "b", prefetch.ReasonDone, "already cached", n.name)
	t.Logf("event on b: %s", ev)
	if _, err := n.agent.Pin(mustRef(t, ref), "csi:vol-b"); err != nil {
		t.Fatal(err)
	}

	// Foreground deletion: with no garbage collector running here, a stays
	// with its deletionTimestamp and finalizer. Being deleted is gone.
	fg := metav1.DeletePropagationForeground
	if err := e.kube.AppsV1().Deployments(e.ns).Delete(context.Background(), "a", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.kube.AppsV1().Deployments(e.ns).Patch(context.Background(), "a", types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	})
	if d, err := e.kube.AppsV1().Deployments(e.ns).Get(context.Background(), "a", metav1.GetOptions{}); err != nil || d.DeletionTimestamp == nil {
		t.Fatalf("a after a foreground delete: %v, want it still there and being deleted", err)
	}
	n.waitPins(t, ref, b, "csi:vol-b")
	if err := e.kube.AppsV1().Deployments(e.ns).Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPins(t, ref, "csi:vol-b")
	if _, err := n.agent.Evict(mustRef(t, ref)); !errors.Is(err, cache.ErrPinned) {
		t.Fatalf("evict while a volume mounts it: %v, want ErrPinned", err)
	}
	if err := n.agent.Unpin(mustRef(t, ref), "csi:vol-b"); err != nil {
		t.Fatal(err)
	}
	n.waitPins(t, ref) // held, no pin: evictable, not deleted
	e.waitWarm(t, n.name, ref)
}

// TestStopsFitting: a workload that no longer fits the node (the node's
// labels change) loses its pin there, and the model stays held and
// labelled; when it fits again the held model is pinned again without a
// download.
func TestStopsFitting(t *testing.T) {
	e := newEnv(t)
	ref := e.putModel(t, "fit", 80)
	n := e.startNode(t, "n", map[string]string{"pool": "gpu"})
	h := holder("deployment", e.ns, "server")

	e.createDeployment(t, deployment("server", ref, 0, nodeSelector("pool", "gpu")))
	n.waitPins(t, ref, h)
	e.waitEvent(t, "server", prefetch.ReasonDone, "fetched in")

	e.setNodeLabel(t, n.name, "pool", "cpu")
	n.waitPins(t, ref)
	e.waitWarm(t, n.name, ref)

	jobs := len(n.agent.Jobs())
	e.setNodeLabel(t, n.name, "pool", "gpu")
	n.waitPins(t, ref, h)
	e.waitEvent(t, "server", prefetch.ReasonDone, "already cached")
	if got := len(n.agent.Jobs()); got != jobs {
		t.Errorf("the held model was downloaded again: %d jobs, was %d", got, jobs)
	}
}

// TestLabelsFollowLRUEviction: a model the workload no longer names stays
// labelled while held; when another prefetch needs its space, the cache's
// LRU eviction removes it and the controller takes its label off the node
// at the next resync. Pinned models are never the ones evicted.
func TestLabelsFollowLRUEviction(t *testing.T) {
	e := newEnv(t)
	refA := e.putModel(t, "a", 90)
	refB := e.putModel(t, "b", 91)
	refC := e.putModel(t, "c", 92)
	// Room for two of the ~1 MiB models below the high watermark, not three.
	n := e.startNodeCapacity(t, "n", nil, 5<<19)
	h := holder("deployment", e.ns, "server")

	e.createDeployment(t, deployment("server", refA, 0))
	n.waitPins(t, refA, h)
	e.waitWarm(t, n.name, refA)

	e.setAnnotation(t, "server", refB)
	n.waitPins(t, refB, h)
	n.waitPins(t, refA) // unpinned, still held
	e.waitWarm(t, n.name, refA, refB)

	e.setAnnotation(t, "server", refB+", "+refC)
	n.waitPins(t, refC, h)
	e.waitWarm(t, n.name, refB, refC)
	if _, held := n.pins(t, refA); held {
		t.Errorf("%s still held after the cache made room for %s", refA, refC)
	}
	n.waitPins(t, refB, h)
	if ev := n.store.Status().Evictions; ev == 0 {
		t.Errorf("no eviction counted")
	}
}

// TestLabelsFollowTheCacheAtOnce: with a resync of an hour, a model that
// becomes ready gets its label and an evicted one loses it at once, because
// the agent says when its cache changed.
func TestLabelsFollowTheCacheAtOnce(t *testing.T) {
	e := newEnv(t)
	ref := e.putModel(t, "notified", 93)
	n := e.startNode(t, "n", nil)
	n.stop()
	n.resync = time.Hour
	n.startController(t, e.kube, e.ns)
	h := holder("deployment", e.ns, "server")

	e.createDeployment(t, deployment("server", ref, 0))
	n.waitPins(t, ref, h)
	e.waitWarm(t, n.name, ref)
	e.setAnnotation(t, "server", "")
	n.waitPins(t, ref) // unpinned, still held: still warm
	e.waitWarm(t, n.name, ref)
	if _, err := n.agent.Evict(mustRef(t, ref)); err != nil {
		t.Fatal(err)
	}
	e.waitWarm(t, n.name)
}

// TestRestrictedSource: a workload cannot make the node fetch through a
// source kept for other namespaces; it is told why, and nothing is fetched.
func TestRestrictedSource(t *testing.T) {
	e := newEnv(t)
	e.putModel(t, "private", 94)
	ref := "s3://models/private?source=restricted"
	n := e.startNode(t, "n", nil)
	e.createDeployment(t, deployment("server", ref, 0))
	e.waitEvent(t, "server", prefetch.ReasonFailed, `source "restricted" may not be used by namespace`)
	if _, held := n.pins(t, ref); held {
		t.Fatalf("%s was fetched for a namespace its source does not serve", ref)
	}
	e.waitWarm(t, n.name)
}

// TestJoinDuringDownload: a workload that names a model while it downloads
// for another one is told it started, and its PrefetchDone reports the
// download it waited for (not "already cached"). One PrefetchStarted each.
func TestJoinDuringDownload(t *testing.T) {
	e := newEnv(t)
	e.putModel(t, "slow", 100)
	ref := "s3://models/slow?source=gated"
	// Object GETs wait at the proxy until release; listing passes.
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	e.gate.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && !strings.Contains(r.URL.RawQuery, "list-type") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	n := e.startNode(t, "n", nil)
	t.Cleanup(open) // before the node's cleanup waits for its downloads

	e.createDeployment(t, deployment("first", ref, 0))
	e.waitEvent(t, "first", prefetch.ReasonStarted, n.name)
	e.createDeployment(t, deployment("second", ref, 0))
	e.waitEvent(t, "second", prefetch.ReasonStarted, n.name)
	if _, held := n.pins(t, ref); held {
		t.Fatalf("%s held before its GETs were let through", ref)
	}
	open()
	n.waitPins(t, ref, holder("deployment", e.ns, "first"), holder("deployment", e.ns, "second"))
	for _, name := range []string{"first", "second"} {
		ev := e.waitEvent(t, name, prefetch.ReasonDone, "fetched in")
		if strings.Contains(ev, "already cached") {
			t.Errorf("%s waited for the download; its event: %s", name, ev)
		}
		var started int
		for _, ev := range e.events(t, name) {
			if strings.HasPrefix(ev, prefetch.ReasonStarted) {
				started++
			}
		}
		if started != 1 {
			t.Errorf("%s: %d PrefetchStarted events, want 1: %q", name, started, e.events(t, name))
		}
	}
}

// current returns the revision of ref the node holds as current.
func (n *node) current(t *testing.T, ref string) string {
	t.Helper()
	id := mustRef(t, ref).ID()
	for _, m := range n.store.Status().Models {
		if m.Current && mustRef(t, m.Ref).ID() == id {
			return m.Revision
		}
	}
	t.Fatalf("%s: %s not held", n.name, ref)
	return ""
}

// waitRevisionPins waits until revision rev of ref is held with exactly the
// pins want.
func (n *node) waitRevisionPins(t *testing.T, ref, rev string, want ...string) {
	t.Helper()
	slices.Sort(want)
	id := mustRef(t, ref).ID()
	eventually(t, 30*time.Second, fmt.Sprintf("%s pins of %s revision %s", n.name, ref, rev), func() error {
		for _, m := range n.store.Status().Models {
			if m.Revision != rev || mustRef(t, m.Ref).ID() != id {
				continue
			}
			got := slices.Clone(m.Pins)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("pins %v, want %v", got, want)
			}
			return nil
		}
		return errors.New("not held")
	})
}

func (e *env) setNodeLabel(t *testing.T, node, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	if _, err := e.kube.CoreV1().Nodes().Patch(context.Background(), node, types.StrategicMergePatchType,
		[]byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
