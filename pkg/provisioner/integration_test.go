package provisioner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/provisioner"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// The PV controller of kube-controller-manager marks each claim with the
// provisioner that should serve it; this API server runs no controllers, so
// the test marks claims itself.
const annProvisioner = "volume.kubernetes.io/storage-provisioner"

func newClaim(name string, ann map[string]string) *v1.PersistentVolumeClaim {
	ann[annProvisioner] = "modelcache.csi.io"
	sc := "model-cache"
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: ann},
		Spec: v1.PersistentVolumeClaimSpec{StorageClassName: &sc, AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany},
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}}},
	}
}

func TestProvisionerAgainstAPIServer(t *testing.T) {
	kc := kubetest.Start(t).Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := kc.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "model-cache"},
		Provisioner: "modelcache.csi.io", Parameters: map[string]string{"source": "minio"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go provisioner.Run(ctx, kc, "modelcache.csi.io")

	good, err := kc.CoreV1().PersistentVolumeClaims("default").Create(ctx,
		newClaim("llama", map[string]string{provisioner.AnnModel: "s3://models/llama"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := kc.CoreV1().PersistentVolumeClaims("default").Create(ctx, newClaim("nomodel", map[string]string{}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	pvName := "pvc-" + string(good.UID)
	var pv *v1.PersistentVolume
	waitUntil(t, 60*time.Second, func() bool {
		pv, err = kc.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err == nil
	})
	src := pv.Spec.CSI
	if src == nil || src.Driver != "modelcache.csi.io" || !src.ReadOnly || src.VolumeAttributes["model"] != "s3://models/llama?source=minio" {
		t.Fatalf("PV source %+v", pv.Spec.PersistentVolumeSource)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != good.UID || pv.Spec.AccessModes[0] != v1.ReadOnlyMany {
		t.Fatalf("PV does not match its claim: %+v", pv.Spec)
	}

	// The claim without a model is not silently Pending: it gets an Event.
	waitUntil(t, 60*time.Second, func() bool { return hasEvent(ctx, kc, bad, "ProvisioningFailed", provisioner.AnnModel) })
	if _, err := kc.CoreV1().PersistentVolumes().Get(ctx, "pvc-"+string(bad.UID), metav1.GetOptions{}); err == nil {
		t.Fatal("a PV was made for a claim without a model")
	}
}

func hasEvent(ctx context.Context, kc kubernetes.Interface, claim *v1.PersistentVolumeClaim, reason, text string) bool {
	evs, err := kc.CoreV1().Events(claim.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(claim.UID)})
	if err != nil {
		return false
	}
	for _, e := range evs.Items {
		if e.Reason == reason && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
