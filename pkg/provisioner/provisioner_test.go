package provisioner

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func claim(ann map[string]string, modes ...v1.PersistentVolumeAccessMode) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", Annotations: ann},
		Spec: v1.PersistentVolumeClaimSpec{AccessModes: modes,
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("10Gi")}}},
	}
}

func class(params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "model-cache"}, Provisioner: "modelcache.csi.io", Parameters: params}
}

func TestProvision(t *testing.T) {
	p := &Provisioner{DriverName: "modelcache.csi.io"}
	pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{PVName: "pvc-1",
		PVC:          claim(map[string]string{AnnModel: "s3://models/llama"}, v1.ReadOnlyMany),
		StorageClass: class(map[string]string{"source": "minio", "model": "s3://models/default"})})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatal(err, state)
	}
	src := pv.Spec.CSI
	if src.Driver != "modelcache.csi.io" || !src.ReadOnly || src.VolumeAttributes["model"] != "s3://models/llama?source=minio" {
		t.Fatalf("pv csi source %+v: want the claim's model with the class's source, read-only", src)
	}
	if pv.Spec.AccessModes[0] != v1.ReadOnlyMany || pv.Spec.StorageClassName != "model-cache" ||
		pv.Spec.Capacity.Storage().String() != "10Gi" || pv.Name != "pvc-1" {
		t.Fatalf("pv spec %+v", pv.Spec)
	}
	// The class alone may name the model.
	pv, _, err = p.Provision(context.Background(), controller.ProvisionOptions{PVName: "pvc-2",
		PVC: claim(nil, v1.ReadOnlyMany), StorageClass: class(map[string]string{"model": "s3://models/default"})})
	if err != nil || pv.Spec.CSI.VolumeAttributes["model"] != "s3://models/default" {
		t.Fatalf("class model: %v %v", pv, err)
	}
}

func TestProvisionRefusals(t *testing.T) {
	p := &Provisioner{DriverName: "modelcache.csi.io"}
	cases := []struct {
		name  string
		claim *v1.PersistentVolumeClaim
		class *storagev1.StorageClass
		want  string
	}{
		{"no model", claim(nil, v1.ReadOnlyMany), class(nil), "modelcache.io/model"},
		{"writer", claim(map[string]string{AnnModel: "s3://models/m"}, v1.ReadWriteOnce), class(nil), "ReadOnlyMany"},
		{"bad ref", claim(map[string]string{AnnModel: "s3://models/../etc"}, v1.ReadOnlyMany), class(nil), ".."},
		{"bad param", claim(map[string]string{AnnModel: "s3://models/m"}, v1.ReadOnlyMany), class(map[string]string{"modle": "x"}), "modle"},
		{"bad revision", claim(map[string]string{AnnModel: "s3://models/m", AnnRevision: "zz"}, v1.ReadOnlyMany), class(nil), "revision"},
		{"half secret", claim(map[string]string{AnnModel: "s3://models/m"}, v1.ReadOnlyMany),
			class(map[string]string{paramSecretName: "keys"}), "go together"},
		{"bad template", claim(map[string]string{AnnModel: "s3://models/m"}, v1.ReadOnlyMany),
			class(map[string]string{paramSecretName: "${pvc.annotations['x']}", paramSecretNamespace: "ns"}), "only ${pvc.name}"},
	}
	for _, c := range cases {
		_, state, err := p.Provision(context.Background(), controller.ProvisionOptions{PVName: "pv", PVC: c.claim, StorageClass: c.class})
		if err == nil || !strings.Contains(err.Error(), c.want) || state != controller.ProvisioningFinished {
			t.Errorf("%s: %v (%v), want a final error mentioning %q", c.name, err, state, c.want)
		}
	}
}

// Each claim's volume carries the Secret of its own namespace, which kubelet
// hands to the plugin for the credentials check.
func TestProvisionNodePublishSecret(t *testing.T) {
	p := &Provisioner{DriverName: "modelcache.csi.io"}
	pv, _, err := p.Provision(context.Background(), controller.ProvisionOptions{PVName: "pv",
		PVC:          claim(map[string]string{AnnModel: "s3://models/m"}, v1.ReadOnlyMany),
		StorageClass: class(map[string]string{paramSecretName: "s3-keys-${pvc.name}", paramSecretNamespace: "${pvc.namespace}"})})
	if err != nil {
		t.Fatal(err)
	}
	ref := pv.Spec.CSI.NodePublishSecretRef
	if ref == nil || ref.Name != "s3-keys-c" || ref.Namespace != "ns" {
		t.Fatalf("nodePublishSecretRef %+v, want ns/s3-keys-c", ref)
	}
	if _, ok := pv.Spec.CSI.VolumeAttributes[paramSecretName]; ok {
		t.Fatal("the secret parameter leaked into the volume attributes")
	}
}
