//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// TestPrefetch runs issue 4's assertions (1) and (6b) on the real cluster,
// with the prefetch controller inside the DaemonSet's cache-agent:
//
//	(1) a Deployment with the prefetch annotation and replicas 0: the model
//	    comes down, is pinned for the Deployment, the Node gets its warm label
//	    and annotation, and the Deployment its PrefetchStarted and
//	    PrefetchDone events, all before any pod exists;
//	(6b) scaled to one pod (scheduled by a required affinity on the warm
//	    label, mounting the model), then the annotation removed and a second
//	    workload naming the model deleted: the workload pins go, the volume's
//	    pin stays, the pod still reads the model's bytes and the agent refuses
//	    to evict it. Once the pod is gone no pin is left and the model is
//	    still held (evictable, not deleted); evicting it takes its label off
//	    the Node within the controller's resync.
func TestPrefetch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m := newModel(bucket, "prefetch", 32<<20, 4)
	m.upload(t, e.s3)
	ref := "s3://" + bucket + "/prefetch?source=local"
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	label := prefetch.LabelKey(r)
	node := e.nodeName(t)
	const pool, other = "prefetch-pool", "prefetch-other"
	holder := func(name string) string { return prefetch.HolderPrefix + "deployment/" + e.ns + "/" + name }
	t.Cleanup(func() {
		for _, name := range []string{pool, other} {
			e.deleteDeployment(name)
		}
	})

	// (1) replicas 0: the pre-warmed pool.
	start := time.Now()
	e.createDeployment(t, prefetchDeployment(pool, ref, label))
	e.waitFor(t, 2*time.Minute, "model ready, pinned and labelled on "+node, func() error {
		if pins := e.pinsOn(t, ref); !slices.Equal(pins, []string{holder(pool)}) {
			return fmt.Errorf("agent pins %q, want [%s]", pins, holder(pool))
		}
		return e.checkWarm(node, r, true)
	})
	t.Logf("replicas 0: %s ready on %s, pinned and labelled %s=ready %.3fs after the Deployment was created",
		mib(m.size()), node, label, time.Since(start).Seconds())
	if pods := e.podsOf(t, pool); len(pods) != 0 {
		t.Errorf("Deployment %s has replicas 0 but pods exist: %v", pool, pods)
	}
	t.Logf("event %s", e.waitDeploymentEvent(t, pool, prefetch.ReasonStarted, "fetching "+r.String(), node))
	t.Logf("event %s", e.waitDeploymentEvent(t, pool, prefetch.ReasonDone, r.String(), node, "fetched in", label+"="+prefetch.LabelReady))

	// A second workload naming the model: a pin of its own, no new download.
	e.createDeployment(t, prefetchDeployment(other, ref, label))
	e.waitFor(t, time.Minute, "a pin for "+other, func() error {
		if pins := e.pinsOn(t, ref); !sameSet(pins, []string{holder(pool), holder(other)}) {
			return fmt.Errorf("agent pins %q", pins)
		}
		return nil
	})
	t.Logf("event %s", e.waitDeploymentEvent(t, other, prefetch.ReasonDone, "already cached", node))

	// (6b) one pod of the pool mounts the model; only a warm node may run it.
	e.scaleDeployment(t, pool, 1)
	p := e.waitDeploymentPod(t, pool, 3*time.Minute)
	if p.Spec.NodeName != node {
		t.Errorf("pod %s on node %q, want the warm node %s", p.Name, p.Spec.NodeName, node)
	}
	e.checkReader(t, p.Name, m)
	var volumePin string
	e.waitFor(t, 30*time.Second, "the volume's pin beside the workloads'", func() error {
		pins := e.pinsOn(t, ref)
		volumePin = ""
		for _, pin := range pins {
			if strings.HasPrefix(pin, "csi:") {
				volumePin = pin
			}
		}
		if len(pins) != 3 || volumePin == "" {
			return fmt.Errorf("agent pins %q, want both workloads' and one csi: pin", pins)
		}
		return nil
	})

	e.setPrefetchAnnotation(t, pool, "")
	e.deleteDeployment(other)
	e.waitFor(t, time.Minute, "workload pins dropped", func() error {
		if pins := e.pinsOn(t, ref); !slices.Equal(pins, []string{volumePin}) {
			return fmt.Errorf("agent pins %q, want only the volume's %s", pins, volumePin)
		}
		return nil
	})
	// Nothing in use was removed: the pod reads the same bytes now, the agent
	// refuses to evict the model, and the node stays labelled (it holds it).
	got, err := e.kubectl(ctx, "exec", p.Name, "--", "sh", "-c", "cd /model && find . -type f | sort | sed 's#^\\./#/model/#' | xargs sha256sum")
	if err != nil {
		t.Errorf("pod %s: sha256sum after the annotation was removed: %v\n%s", p.Name, err, got)
	} else if g, w := strings.TrimSpace(got), strings.Join(m.sums("/model"), "\n"); g != w {
		t.Errorf("pod %s reads other bytes after the annotation was removed:\n got:\n%s\n want:\n%s", p.Name, g, w)
	}
	if _, err := e.agent.Evict(ctx, ref); !errors.Is(err, agentapi.ErrPinned) {
		t.Errorf("evict %s while pod %s mounts it: %v, want %v", ref, p.Name, err, agentapi.ErrPinned)
	} else {
		t.Logf("evict while mounted: %v", err)
	}
	if err := e.checkWarm(node, r, true); err != nil {
		t.Errorf("model held and mounted: %v", err)
	}

	// The pod goes: no pin left, the model is still held (evictable).
	e.scaleDeployment(t, pool, 0)
	if err := e.waitPodGone(p.Name); err != nil {
		t.Fatalf("pod %s: %v", p.Name, err)
	}
	if mnt := e.mountsOf(t, string(p.UID)); len(mnt) != 0 {
		t.Errorf("pod %s gone, its mounts remain:\n  %s", p.Name, strings.Join(mnt, "\n  "))
	}
	e.waitFor(t, 30*time.Second, "no pin left", func() error {
		if pins := e.pinsOn(t, ref); len(pins) != 0 {
			return fmt.Errorf("agent pins %q", pins)
		}
		return nil
	})
	if !e.held(t, ref) {
		t.Fatalf("%s was deleted when its last pin went; it should stay until evicted", ref)
	}
	evicted := time.Now()
	if _, err := e.agent.Evict(ctx, ref); err != nil {
		t.Fatalf("evict %s with no pin left: %v", ref, err)
	}
	e.waitFor(t, 75*time.Second, "warm label gone after the eviction", func() error { return e.checkWarm(node, r, false) })
	t.Logf("evicted: label %s gone from %s after %.1fs (the controller notices within one 30s resync)",
		label, node, time.Since(evicted).Seconds())
}

// prefetchDeployment is a Deployment at replicas 0 whose annotation names
// ref and whose pods mount it (the reader) and require a node warm with it.
func prefetchDeployment(name, ref, label string) *appsv1.Deployment {
	pod := modelPod(name, ref)
	pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: label, Operator: corev1.NodeSelectorOpIn, Values: []string{prefetch.LabelReady}}},
		}}},
	}}
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{prefetch.AnnotationPrefetch: ref}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
}

func (e *env) createDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	if _, err := e.kube.AppsV1().Deployments(e.ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s: %v", d.Name, err)
	}
}

// deleteDeployment deletes a Deployment (its pods go with it, through the
// garbage collector) and waits until its pods are gone.
func (e *env) deleteDeployment(name string) {
	ctx := context.Background()
	err := e.kube.AppsV1().Deployments(e.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return
	}
	wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		return err == nil && len(l.Items) == 0, nil
	})
}

func (e *env) scaleDeployment(t *testing.T, name string, replicas int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := e.kube.AppsV1().Deployments(e.ns).Patch(context.Background(), name, types.StrategicMergePatchType,
		[]byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale deployment %s to %d: %v", name, replicas, err)
	}
}

// setPrefetchAnnotation sets the prefetch annotation of a Deployment; ""
// removes it.
func (e *env) setPrefetchAnnotation(t *testing.T, name, value string) {
	t.Helper()
	v := any(value)
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{prefetch.AnnotationPrefetch: v}}})
	if _, err := e.kube.AppsV1().Deployments(e.ns).Patch(context.Background(), name, types.StrategicMergePatchType,
		patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotate deployment %s: %v", name, err)
	}
}

func (e *env) podsOf(t *testing.T, app string) []string {
	t.Helper()
	l, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatalf("list pods of %s: %v", app, err)
	}
	var names []string
	for _, p := range l.Items {
		names = append(names, p.Name)
	}
	return names
}

// waitDeploymentPod waits until the Deployment app has exactly one pod and
// it is Ready.
func (e *env) waitDeploymentPod(t *testing.T, app string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil || len(l.Items) != 1 {
			return false, nil
		}
		p = &l.Items[0]
		last = p.Name
		return podReady(p), nil
	})
	if err != nil {
		msg := "no pod"
		if last != "" {
			msg = e.describe(last)
		}
		t.Fatalf("deployment %s: no single Ready pod after %v:\n%s", app, timeout, msg)
	}
	return p
}

func (e *env) waitPodGone(name string) error {
	return wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// waitDeploymentEvent waits for an event on the Deployment name whose reason
// is reason and whose message contains every one of parts.
func (e *env) waitDeploymentEvent(t *testing.T, name, reason string, parts ...string) string {
	t.Helper()
	var found string
	var seen []string
	e.waitFor(t, time.Minute, fmt.Sprintf("event %s %q on deployment %s", reason, parts, name), func() error {
		l, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.kind": "Deployment", "involvedObject.name": name}.String()})
		if err != nil {
			return err
		}
		seen = seen[:0]
		for _, ev := range l.Items {
			seen = append(seen, ev.Reason+": "+ev.Message)
			if ev.Reason != reason {
				continue
			}
			ok := true
			for _, part := range parts {
				ok = ok && strings.Contains(ev.Message, part)
			}
			if ok {
				found = ev.Type + " " + ev.Reason + ": " + ev.Message
				return nil
			}
		}
		return fmt.Errorf("events: %q", seen)
	})
	return found
}

// waitFor polls fn until it returns nil, failing the test after timeout
// with fn's last error.
func (e *env) waitFor(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = fn()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: not after %v: %v", what, timeout, last)
	}
}

func (e *env) nodeName(t *testing.T) string {
	t.Helper()
	l, err := e.kube.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("want the one node of the e2e cluster: %v (%d nodes)", err, len(l.Items))
	}
	return l.Items[0].Name
}

// checkWarm says whether node's warm label for r and its entry in the
// modelcache.io/models annotation are there (want) or gone (!want).
func (e *env) checkWarm(node string, r model.Ref, want bool) error {
	n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	key := prefetch.LabelKey(r)
	models := map[string]string{}
	if v := n.Annotations[prefetch.AnnotationModels]; v != "" {
		if err := json.Unmarshal([]byte(v), &models); err != nil {
			return fmt.Errorf("annotation %s=%q: %w", prefetch.AnnotationModels, v, err)
		}
	}
	labelled := n.Labels[key] == prefetch.LabelReady
	listed := models[r.String()] == key
	if labelled != want || listed != want {
		return fmt.Errorf("node %s: label %s=%q, annotation %s=%q; want present=%v",
			node, key, n.Labels[key], prefetch.AnnotationModels, n.Annotations[prefetch.AnnotationModels], want)
	}
	return nil
}

// held says whether the agent holds some revision of ref.
func (e *env) held(t *testing.T, ref string) bool {
	t.Helper()
	st, err := e.agent.Status(context.Background())
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	for _, m := range st.Models {
		if sameModel(m.Ref, ref) {
			return true
		}
	}
	return false
}

// kubectl runs the e2e cluster's kubectl in the test namespace and returns
// its combined output. (exec over client-go would add websocket and SPDY
// modules to go.mod for this one call.)
func (e *env) kubectl(ctx context.Context, args ...string) (string, error) {
	bin := os.Getenv("MODELCACHE_E2E_KUBECTL")
	if bin == "" {
		bin = "../bin/k8s/kubectl"
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-n", e.ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
