//go:build e2e

// Package e2e runs modelcache on a real single-node cluster (e2e/up.sh): the
// DaemonSet from deploy/e2e, a real kubelet calling the CSI plugin, real
// bind mounts, versitygw as S3. Run it with `make e2e` (e2e/run.sh), which
// brings everything up, passes the addresses in MODELCACHE_E2E_* and tears
// it all down; run directly, the suite skips.
//
// Issue 4's assertions and where they live:
//
//	(1) Deployment prefetch annotation, replicas 0 → model ready, node label   TestPrefetch (prefetch_test.go)
//	(2) inline CSI volume: Running, expected bytes, read-only                   TestModelVolumes/inline
//	(3) generic ephemeral volume of StorageClass model-cache                    TestStorageClass
//	(4) model not cached: fetch progress in the pod's events, then Running     TestModelVolumes/cold-progress
//	(5) creation → Ready, warm vs cold, printed                                 TestModelVolumes (log + summary)
//	(6a) deleting pods unmounts and unpins                                      TestModelVolumes/delete-unpins
//	(6b) removing the annotation unpins, removes nothing in use                 TestPrefetch
//
// Issue 15's shared ReadOnlyMany claim (KServe's storageUri: pvc://NAME/),
// with the sources file's namespaces rules, in namespaces of its own:
//
//	one claim, three pods: all read the model, one download, a pin each     TestSharedClaim (claim_test.go) (a)
//	another namespace's source, model warm: PermissionDenied event, no mount TestSharedClaim (b)
//	the namespace's own source, same prefix: runs, one copy on disk         TestSharedClaim (c)
//	deleting the pods unmounts and unpins                                    TestSharedClaim (d)
//
// Issue 15's ModelCache, with no Deployment: kubectl get modelcaches shows
// READY 1/1 and the revision; the agent pins it; delete unpins   TestModelCache (modelcache_test.go)
// The pod webhook's warm-node affinity                              TestWebhook (webhook_test.go)
//
// A new test gets everything through newEnv(t): the clientset, the S3
// client (upload a testModel), the agent's socket on the host (pinsOn), the
// kubelet root (mountsOf). Use a bucket or prefix of its own.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
)

const bucket = "e2e-models"

func TestModelVolumes(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.deleteTestPods)
	// The "slow" source in the agent's sources file points here: 40 MB/s, so
	// the 160 MiB model takes ~4 s, longer than the overlay's --publish-wait=2s.
	throttle(t, e.slowAddr, strings.TrimPrefix(mustEnv(t, "MODELCACHE_E2E_S3"), "http://"), 40e6)

	small := newModel(bucket, "small", 24<<20, 1)
	big := newModel(bucket, "big", 160<<20, 2)
	small.upload(t, e.s3)
	big.upload(t, e.s3)
	smallRef := "s3://" + bucket + "/small?source=local"
	bigRef := "s3://" + bucket + "/big?source=slow"

	type timing struct {
		what string
		d    time.Duration
	}
	var timings []timing
	defer func() {
		t.Log("time from pod creation to Ready:")
		for _, x := range timings {
			t.Logf("  %-44s %8.3fs", x.what, x.d.Seconds())
		}
		if url := os.Getenv("MODELCACHE_E2E_PLUGIN_METRICS"); url != "" {
			t.Log("NodePublishVolume as the plugin measured it (successful calls):")
			for label, v := range publishLatency(url) {
				t.Logf("  cache=%-5s mean %8.3f ms over %.0f calls", label, v[0]*1000, v[1])
			}
		}
	}()
	uids := map[string]string{} // pod name → uid, for the mount check

	t.Run("inline", func(t *testing.T) {
		// (2) a pod with an inline CSI volume: first pod on this model, a cold fetch.
		p, d := e.createAndWaitReady(t, modelPod("inline-cold", smallRef), 3*time.Minute)
		uids[p.Name] = string(p.UID)
		timings = append(timings, timing{"cold, " + mib(small.size()) + " at full speed", d})
		t.Logf("inline-cold Ready after %.3fs", d.Seconds())
		e.checkReader(t, p.Name, small)
		if m := e.mountsOf(t, uids[p.Name]); len(m) == 0 {
			t.Errorf("no mount of pod %s under the kubelet root", p.Name)
		} else {
			for _, l := range m {
				if strings.Contains(l, "modelcache") || strings.Contains(l, "/volumes/kubernetes.io~csi/") {
					t.Logf("mount: %s", l)
				}
			}
		}

		// A second pod on the same model: warm, a bind mount and nothing else.
		p, d = e.createAndWaitReady(t, modelPod("inline-warm", smallRef), 2*time.Minute)
		uids[p.Name] = string(p.UID)
		timings = append(timings, timing{"warm, same model", d})
		t.Logf("inline-warm Ready after %.3fs", d.Seconds())
		e.checkReader(t, p.Name, small)
		if pins := e.pinsOn(t, smallRef); len(pins) != 2 {
			t.Errorf("agent pins on %s with two pods mounting it: %q, want 2", smallRef, pins)
		}
	})

	t.Run("cold-progress", func(t *testing.T) {
		// (4) a model not cached yet, slower to fetch than the publish wait:
		// kubelet's retries show the progress in the pod's events, then it runs.
		p, d := e.createAndWaitReady(t, modelPod("cold-slow", bigRef), 5*time.Minute)
		uids[p.Name] = string(p.UID)
		timings = append(timings, timing{"cold, " + mib(big.size()) + " at 40 MB/s (publish wait 2s)", d})
		t.Logf("cold-slow Ready after %.3fs", d.Seconds())
		var progress []string
		for _, ev := range e.events(p.Name) {
			if strings.Contains(ev.Message, "fetching s3://"+bucket+"/big") {
				progress = append(progress, ev.Reason+": "+ev.Message)
			}
		}
		if len(progress) == 0 {
			t.Errorf("no event of pod %s shows the fetch progress (\"fetching s3://%s/big…\"):\n%s", p.Name, bucket, e.describe(p.Name))
		}
		for _, m := range progress {
			t.Logf("event %s", m)
		}
		e.checkReader(t, p.Name, big)

		// Warm again, for a model 6x bigger: a bind mount costs the same.
		p, d = e.createAndWaitReady(t, modelPod("cold-slow-warm", bigRef), 2*time.Minute)
		uids[p.Name] = string(p.UID)
		timings = append(timings, timing{"warm, " + mib(big.size()), d})
		e.checkReader(t, p.Name, big)
	})

	t.Run("delete-unpins", func(t *testing.T) {
		// (6a) deleting the pods unmounts their volumes and drops their pins.
		if len(uids) == 0 {
			t.Skip("no pod was created")
		}
		for _, ref := range []string{smallRef, bigRef} {
			t.Logf("pins on %s before: %q", ref, e.pinsOn(t, ref))
		}
		for name := range uids {
			if err := e.deletePod(name); err != nil {
				t.Fatalf("delete pod %s: %v", name, err)
			}
		}
		for name, uid := range uids {
			if m := e.mountsOf(t, uid); len(m) != 0 {
				t.Errorf("pod %s deleted, its mounts remain:\n  %s", name, strings.Join(m, "\n  "))
			}
		}
		for _, ref := range []string{smallRef, bigRef} {
			if pins := e.pinsOn(t, ref); len(pins) != 0 {
				t.Errorf("every pod deleted, the agent still pins %s for %q", ref, pins)
			}
		}
	})
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// TestStorageClass: (3) a pod with a generic ephemeral volume of the
// StorageClass model-cache (deploy/storageclass; the provisioner is
// modelcache-controller) runs and reads the model; a claim that names no
// model gets a ProvisioningFailed event instead of a silent Pending.
func TestStorageClass(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.deleteTestPods)
	ctx := context.Background()
	m := newModel(bucket, "sc", 8<<20, 3)
	m.upload(t, e.s3)
	ref := "s3://" + bucket + "/sc?source=local"

	pod := modelPod("sc-ephemeral", "")
	pod.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"modelcache.io/model": ref}},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr("model-cache"),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}}}
	p, d := e.createAndWaitReady(t, pod, 3*time.Minute)
	t.Logf("%s Ready after %.3fs (claim, provisioning, cold fetch)", p.Name, d.Seconds())
	e.checkReader(t, p.Name, m)
	claim, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, p.Name+"-model", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ephemeral claim: %v", err)
	}
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the claim's volume %q: %v", claim.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != "modelcache.csi.io" || !pv.Spec.CSI.ReadOnly {
		t.Errorf("PV %s: want a read-only CSI source of modelcache.csi.io, got %+v", pv.Name, pv.Spec.CSI)
	} else {
		t.Logf("PV %s: access %v, attributes %v", pv.Name, pv.Spec.AccessModes, pv.Spec.CSI.VolumeAttributes)
	}

	// A claim without a model: an event that says so.
	bad := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "sc-no-model"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr("model-cache"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, bad.Name, metav1.DeleteOptions{}) })
	var msg string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.kind": "PersistentVolumeClaim", "involvedObject.name": bad.Name, "reason": "ProvisioningFailed"}.String()})
		if err != nil || len(l.Items) == 0 {
			return false, nil
		}
		msg = l.Items[0].Message
		return true, nil
	})
	if err != nil {
		t.Errorf("claim %s names no model: no ProvisioningFailed event after a minute", bad.Name)
	} else {
		t.Logf("claim without a model: ProvisioningFailed: %s", msg)
	}

	// Deleting the pod deletes its claim (owner reference) and unpins.
	if err := e.deletePod(p.Name); err != nil {
		t.Fatal(err)
	}
	if pins := e.pinsOn(t, ref); len(pins) != 0 {
		t.Errorf("pod deleted, the agent still pins %s for %q", ref, pins)
	}
}
