//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// The namespaces of TestSharedClaim. e2e/run.sh names them in the sources
// file: source team-a serves e2e-claim-a only, team-b e2e-claim-b only. Both
// point at the same versitygw with the same keys, so the only thing that
// tells them apart is the namespaces rule.
const (
	claimNSA = "e2e-claim-a"
	claimNSB = "e2e-claim-b"
)

// TestSharedClaim: one ReadOnlyMany claim of the StorageClass model-cache
// shared by many pods, as KServe's `storageUri: pvc://NAME/` uses it (each
// predictor pod mounts the same claim read-only), and the sources file's
// namespaces rules on such claims:
//
//	(a) namespace A: one claim (source team-a), three pods started together
//	    all run and read the model's bytes; one download serves them all, and
//	    the agent holds one pin per pod.
//	(b) namespace B: a claim naming team-a (restricted to A) for the same
//	    prefix, which the node holds warm, gives B's pod nothing: it stays
//	    Pending with a FailedMount event saying PermissionDenied and why, no
//	    mount, no pin. An inline volume in B that writes the pod-namespace
//	    attribute itself ("I am e2e-claim-a") is refused the same way.
//	(c) namespace B: a claim naming team-b (B's own source) for the same
//	    prefix runs and reads the same bytes, and the node stores them once.
//	    The bytes are downloaded again, by design: content is reused by ETag
//	    only within one source (docs/security.md, "An ETag counts only within
//	    its scope"); across sources only the SHA-256 of downloaded bytes
//	    deduplicates, so the disk holds one copy.
//	(d) deleting the pods unmounts and unpins (as TestModelVolumes/delete-unpins).
func TestSharedClaim(t *testing.T) {
	e := newEnv(t)
	a := e.freshNamespace(t, claimNSA)
	b := e.freshNamespace(t, claimNSB)
	m := newModel(bucket, "shared-claim", 16<<20, 5)
	m.upload(t, e.s3)
	refA := "s3://" + bucket + "/shared-claim?source=team-a"
	refB := "s3://" + bucket + "/shared-claim?source=team-b"
	uids := map[string]string{} // namespace/pod → uid, for the mount checks

	// (a) One claim, three pods created at once (a Deployment's replicas
	// starting together), each mounting the claim read-only.
	a.createModelClaim(t, "model", refA)
	servers := []string{"server-0", "server-1", "server-2"}
	for _, name := range servers {
		a.createPod(t, claimPod(name, "model"))
	}
	for _, name := range servers {
		p := a.waitReady(t, name, 3*time.Minute)
		uids[a.ns+"/"+name] = string(p.UID)
		a.checkReader(t, name, m)
	}
	pins := e.pinsAt(t, refA)
	if len(pins) != len(servers) {
		t.Errorf("agent pins on %s with %d pods on the claim: %q, want one each", refA, len(servers), pins)
	}
	for _, name := range servers {
		if !slices.ContainsFunc(pins, func(h string) bool { return strings.HasPrefix(h, "csi:"+a.ns+"/"+name+":") }) {
			t.Errorf("no pin of pod %s/%s among %q", a.ns, name, pins)
		}
	}
	// One download for the three pods: one job for the ref, which fetched the
	// model once (the other publishes were hits or joined it).
	if jobs := e.jobsAt(t, refA); len(jobs) != 1 || jobs[0].FetchedBytes != m.size() {
		t.Errorf("downloads of %s for three pods: %+v, want one that fetched %d bytes", refA, jobs, m.size())
	}
	stA := e.status(t)

	// (b) B names A's source for the same prefix. The node holds it: only the
	// namespaces rule stands between B's pod and the bytes.
	b.createModelClaim(t, "borrowed", refA)
	b.createPod(t, claimPod("borrower", "borrowed"))
	// The same through an inline volume that claims to be A's: kubelet puts
	// the real pod namespace over a volume attribute of that name.
	spoof := modelPod("spoofer", refA)
	spoof.Spec.AutomountServiceAccountToken = ptr(false)
	spoof.Spec.Volumes[0].CSI.VolumeAttributes["csi.storage.k8s.io/pod.namespace"] = claimNSA
	b.createPod(t, spoof)
	for _, name := range []string{"borrower", "spoofer"} {
		ev := b.waitRefused(t, name, "PermissionDenied",
			fmt.Sprintf("source %q may not be used by namespace %q", "team-a", b.ns))
		t.Logf("%s/%s: %s", b.ns, name, ev)
		p, err := b.kube.CoreV1().Pods(b.ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[b.ns+"/"+name] = string(p.UID)
		if p.Status.Phase != corev1.PodPending || podReady(p) {
			t.Errorf("pod %s/%s was refused the model, yet it is %s (ready %v):\n%s", b.ns, name, p.Status.Phase, podReady(p), b.describe(name))
		}
		if mnt := e.mountsOf(t, string(p.UID)); slices.ContainsFunc(mnt, func(l string) bool { return strings.Contains(l, "/volumes/kubernetes.io~csi/") }) {
			t.Errorf("pod %s/%s was refused the model, yet a CSI volume is mounted for it:\n  %s", b.ns, name, strings.Join(mnt, "\n  "))
		}
	}
	if pins := e.pinsAt(t, refA); len(pins) != len(servers) || slices.ContainsFunc(pins, func(h string) bool { return strings.Contains(h, b.ns+"/") }) {
		t.Errorf("agent pins on %s after B's refused pods: %q, want only A's %d", refA, pins, len(servers))
	}

	// (c) B's own source for the same prefix: the pod runs and reads the same
	// bytes; the node keeps one copy of them.
	b.createModelClaim(t, "own", refB)
	b.createPod(t, claimPod("reader", "own"))
	p := b.waitReady(t, "reader", 3*time.Minute)
	uids[b.ns+"/reader"] = string(p.UID)
	b.checkReader(t, "reader", m)
	if pins := e.pinsAt(t, refB); len(pins) != 1 || !strings.HasPrefix(pins[0], "csi:"+b.ns+"/reader:") {
		t.Errorf("agent pins on %s: %q, want the one of %s/reader", refB, pins, b.ns)
	}
	stB := e.status(t)
	jobs := e.jobsAt(t, refB)
	t.Logf("B's own source: downloads %+v; used bytes %d → %d, dedup saved %d → %d",
		jobs, stA.UsedBytes, stB.UsedBytes, stA.SavedBytes, stB.SavedBytes)
	if len(jobs) != 1 || jobs[0].FetchedBytes != m.size() {
		// Reusing A's bytes by ETag without a download from team-b would
		// trust one source's listing for another's content.
		t.Errorf("downloads of %s: %+v, want one that fetched all %d bytes from B's own source", refB, jobs, m.size())
	}
	if stB.UsedBytes != stA.UsedBytes {
		t.Errorf("the same bytes under B's source grew the store from %d to %d bytes, want one copy (SHA-256 dedup)", stA.UsedBytes, stB.UsedBytes)
	}
	if got := stB.SavedBytes - stA.SavedBytes; got != m.size() {
		t.Errorf("dedup saved %d more bytes with B's copy, want the model's %d", got, m.size())
	}

	// (d) Deleting the pods unmounts their volumes and drops their pins; the
	// refused pods leave nothing behind either.
	for key := range uids {
		ns, name, _ := strings.Cut(key, "/")
		x := *e
		x.ns = ns
		if err := x.deletePod(name); err != nil {
			t.Fatalf("delete pod %s: %v", key, err)
		}
	}
	for key, uid := range uids {
		if mnt := e.mountsOf(t, uid); len(mnt) != 0 {
			t.Errorf("pod %s deleted, its mounts remain:\n  %s", key, strings.Join(mnt, "\n  "))
		}
	}
	for _, ref := range []string{refA, refB} {
		if pins := e.pinsAt(t, ref); len(pins) != 0 {
			t.Errorf("every pod deleted, the agent still pins %s for %q", ref, pins)
		}
	}
}

// freshNamespace creates namespace name (deleting a leftover of an earlier
// run first), deletes it when the test ends, and returns an env for it.
// The names are fixed because the sources file names them.
func (e *env) freshNamespace(t *testing.T, name string) *env {
	t.Helper()
	ctx := context.Background()
	nss := e.kube.CoreV1().Namespaces()
	if err := e.deleteNamespace(name); err != nil {
		t.Fatalf("leftover namespace %s: %v", name, err)
	}
	if _, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := e.deleteNamespace(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	x := *e
	x.ns = name
	// The ServiceAccount admission plugin refuses pods until the namespace's
	// default ServiceAccount exists (kube-controller-manager makes it).
	x.waitFor(t, time.Minute, "ServiceAccount default in "+name, func() error {
		_, err := e.kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return &x
}

// deleteNamespace deletes namespace name and waits until it is gone: its
// pods' volumes torn down, its claims and their volumes deleted.
func (e *env) deleteNamespace(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nss := e.kube.CoreV1().Namespaces()
	err := nss.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for {
		if _, err := nss.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still there after 3 min: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// createModelClaim creates a ReadOnlyMany claim of the StorageClass
// model-cache for ref and waits until it is bound to a read-only CSI volume
// of modelcache.csi.io (the class binds at once: pods are created after).
func (e *env) createModelClaim(t *testing.T, name, ref string) {
	t.Helper()
	ctx := context.Background()
	claims := e.kube.CoreV1().PersistentVolumeClaims(e.ns)
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"modelcache.io/model": ref}},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr("model-cache"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := claims.Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create claim %s/%s: %v", e.ns, name, err)
	}
	var volume string
	e.waitFor(t, time.Minute, "claim "+e.ns+"/"+name+" bound", func() error {
		c, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c.Status.Phase != corev1.ClaimBound {
			return fmt.Errorf("phase %s", c.Status.Phase)
		}
		volume = c.Spec.VolumeName
		return nil
	})
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, volume, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("volume %s of claim %s/%s: %v", volume, e.ns, name, err)
	}
	if !slices.Equal(pv.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}) ||
		pv.Spec.CSI == nil || pv.Spec.CSI.Driver != "modelcache.csi.io" || !pv.Spec.CSI.ReadOnly || pv.Spec.CSI.VolumeAttributes["model"] != ref {
		t.Fatalf("claim %s/%s: want a ReadOnlyMany, read-only CSI volume of modelcache.csi.io for %s, got %v %+v",
			e.ns, name, ref, pv.Spec.AccessModes, pv.Spec.CSI)
	}
}

// claimPod is the reader pod of modelPod on the claim, mounted read-only as
// KServe mounts a pvc:// storageUri. Pods in the test's own namespaces get
// no API token: they need none, and the namespace may not have its CA
// ConfigMap yet.
func claimPod(name, claim string) *corev1.Pod {
	p := modelPod(name, "")
	p.Spec.AutomountServiceAccountToken = ptr(false)
	p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
		ClaimName: claim, ReadOnly: true}}
	return p
}

func (e *env) createPod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", e.ns, p.Name, err)
	}
}

// waitReady waits for a pod created earlier to be Ready.
func (e *env) waitReady(t *testing.T, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	e.waitFor(t, timeout, "pod "+e.ns+"/"+name+" ready", func() error {
		var err error
		if p, err = e.kube.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return err
		}
		if !podReady(p) {
			return fmt.Errorf("phase %s:\n%s", p.Status.Phase, e.describe(name))
		}
		return nil
	})
	return p
}

// waitRefused waits for a FailedMount event on pod name whose message
// contains every one of parts, and returns it. A pod that becomes Ready
// meanwhile was given the volume: that fails the test at once.
func (e *env) waitRefused(t *testing.T, name string, parts ...string) string {
	t.Helper()
	ctx := context.Background()
	var found string
	e.waitFor(t, 2*time.Minute, fmt.Sprintf("event FailedMount %q on pod %s/%s", parts, e.ns, name), func() error {
		if p, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{}); err == nil && podReady(p) {
			t.Fatalf("pod %s/%s should have been refused its volume, and it is Ready:\n%s", e.ns, name, e.describe(name))
		}
		l, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.kind": "Pod", "involvedObject.name": name, "reason": "FailedMount"}.String()})
		if err != nil {
			return err
		}
		for _, ev := range l.Items {
			if !slices.ContainsFunc(parts, func(s string) bool { return !strings.Contains(ev.Message, s) }) {
				found = ev.Type + " " + ev.Reason + ": " + ev.Message
				return nil
			}
		}
		return fmt.Errorf("pod so far:\n%s", e.describe(name))
	})
	return found
}

func (e *env) status(t *testing.T) agentapi.StatusReport {
	t.Helper()
	st, err := e.agent.Status(context.Background())
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	return st
}

// pinsAt is pinsOn for one location: the same bucket and prefix through
// another source is another model to the agent, and pinsOn counts both.
func (e *env) pinsAt(t *testing.T, ref string) []string {
	t.Helper()
	var pins []string
	for _, m := range e.status(t).Models {
		if sameLocation(t, m.Ref, ref) {
			pins = append(pins, m.Pins...)
		}
	}
	return pins
}

// jobsAt lists the agent's downloads of ref's location since it started.
func (e *env) jobsAt(t *testing.T, ref string) []agentapi.Progress {
	t.Helper()
	var out []agentapi.Progress
	for _, j := range e.status(t).Jobs {
		if sameLocation(t, j.Ref, ref) {
			out = append(out, j)
		}
	}
	return out
}

// sameLocation compares two refs without their revisions, source included.
func sameLocation(t *testing.T, a, b string) bool {
	t.Helper()
	ra, err := model.ParseRef(a)
	if err != nil {
		t.Fatalf("ref %q: %v", a, err)
	}
	rb, err := model.ParseRef(b)
	if err != nil {
		t.Fatalf("ref %q: %v", b, err)
	}
	return ra.Location().String() == rb.Location().String()
}
