// Package provisioner serves the model-cache StorageClass: it turns a claim
// (a PVC, or the claim of a generic ephemeral volume) into a ReadOnlyMany CSI
// PersistentVolume whose attributes name the model. Nothing is allocated;
// each node's agent fetches the model when a pod mounts the volume.
package provisioner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/modelcache/modelcache/pkg/csi"
)

// Claim annotations. The model may also come from the StorageClass
// parameter "model"; the claim's annotation wins, so one class serves many
// models.
const (
	AnnModel    = "modelcache.io/model"
	AnnRevision = "modelcache.io/revision"
)

// Provisioner implements controller.Provisioner.
type Provisioner struct {
	// DriverName is the CSI driver of the PVs, modelcache.csi.io.
	DriverName string
}

var _ controller.Provisioner = (*Provisioner)(nil)

// Provision implements controller.Provisioner. An error here becomes a
// ProvisioningFailed Event on the claim, which is how a user learns that the
// claim names no model (instead of a silent Pending).
func (p *Provisioner) Provision(_ context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	pv, err := p.volume(o)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	return pv, controller.ProvisioningFinished, nil
}

func (p *Provisioner) volume(o controller.ProvisionOptions) (*v1.PersistentVolume, error) {
	claim, class := o.PVC, o.StorageClass
	if claim == nil || class == nil {
		return nil, fmt.Errorf("no claim or no StorageClass to provision from")
	}
	for _, m := range claim.Spec.AccessModes {
		if m != v1.ReadOnlyMany {
			return nil, fmt.Errorf("access mode %s: a model volume is read-only; use accessModes: [ReadOnlyMany]", m)
		}
	}
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, fmt.Errorf("volumeMode Block: a model volume is a directory; use Filesystem")
	}
	if claim.Spec.DataSource != nil || claim.Spec.DataSourceRef != nil {
		return nil, fmt.Errorf("a model volume cannot be made from a snapshot or another volume (dataSource)")
	}
	attrs := ClaimAttributes(class.Parameters, claim.Annotations)
	if strings.TrimSpace(attrs[csi.AttrModel]) == "" {
		return nil, fmt.Errorf("claim names no model: annotate it with %s: s3://BUCKET/PREFIX, or set parameter model on StorageClass %s",
			AnnModel, class.Name)
	}
	id, volCtx, err := csi.NewVolume(o.PVName, attrs)
	if err != nil {
		return nil, err
	}
	// A PV must state a capacity; the claim's request is the honest answer
	// we have (the model's size is known only once a node lists it).
	capacity := claim.Spec.Resources.Requests[v1.ResourceStorage]
	if capacity.IsZero() {
		capacity = resource.MustParse("1Mi")
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	secretRef, err := nodePublishSecret(class.Parameters, claim)
	if err != nil {
		return nil, err
	}
	fs := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName, Labels: map[string]string{"app.kubernetes.io/managed-by": "modelcache"}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: capacity},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    &fs,
			MountOptions:                  slices.Clone(class.MountOptions),
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:           p.DriverName,
				VolumeHandle:     id,
				ReadOnly:         true,
				VolumeAttributes: volCtx,
				// kubelet reads this Secret and passes it with every publish;
				// the plugin has the agent check it against the bucket.
				NodePublishSecretRef: secretRef,
			}},
		},
	}, nil
}

// ClaimAttributes are the volume attributes of a claim of a class with
// params: the class's parameters, with the model and revision the claim's
// annotations name instead.
func ClaimAttributes(params, annotations map[string]string) map[string]string {
	attrs := maps.Clone(params)
	if attrs == nil {
		attrs = map[string]string{}
	}
	if v := annotations[AnnModel]; v != "" {
		attrs[csi.AttrModel] = v
	}
	if v := annotations[AnnRevision]; v != "" {
		attrs[csi.AttrRevision] = v
	}
	return attrs
}

// Delete implements controller.Provisioner: there is no storage asset. The
// models stay in the node caches until evicted.
func (p *Provisioner) Delete(context.Context, *v1.PersistentVolume) error { return nil }

// StorageClass parameters naming the Secret with the S3 keys of each volume,
// as in external-provisioner; ${pvc.name} and ${pvc.namespace} are replaced,
// so each team's claims use that team's keys.
const (
	paramSecretName      = "csi.storage.k8s.io/node-publish-secret-name"
	paramSecretNamespace = "csi.storage.k8s.io/node-publish-secret-namespace"
)

func nodePublishSecret(params map[string]string, claim *v1.PersistentVolumeClaim) (*v1.SecretReference, error) {
	name, ns := params[paramSecretName], params[paramSecretNamespace]
	if name == "" && ns == "" {
		return nil, nil
	}
	if name == "" || ns == "" {
		return nil, fmt.Errorf("StorageClass parameters %s and %s go together; set both", paramSecretName, paramSecretNamespace)
	}
	expand := strings.NewReplacer("${pvc.name}", claim.Name, "${pvc.namespace}", claim.Namespace)
	ref := &v1.SecretReference{Name: expand.Replace(name), Namespace: expand.Replace(ns)}
	if strings.Contains(ref.Name+ref.Namespace, "${") {
		return nil, fmt.Errorf("secret reference %s/%s: only ${pvc.name} and ${pvc.namespace} can be used", ref.Namespace, ref.Name)
	}
	return ref, nil
}
