package modelstatus_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
)

// TestCRDsMatchTypes: every field of the Go types survives a round trip
// through a real API server with deploy/crds installed. The API server
// prunes what a CRD's schema does not name, so a field added to the types
// but not to the hand-written CRDs fails here.
func TestCRDsMatchTypes(t *testing.T) {
	ks := kubetest.Start(t)
	ks.InstallCRDs(t)
	dyn := ks.Dynamic(t)
	ctx := context.Background()
	ns := "crd-roundtrip"
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	_, _ = dyn.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).Create(ctx, nsObj, metav1.CreateOptions{})

	now := metav1.NewTime(time.Now().Truncate(time.Second))
	secs := int64(30)
	mc := v1alpha1.ModelCache{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCache},
		ObjectMeta: metav1.ObjectMeta{Name: "every-field", Namespace: ns},
		Spec: v1alpha1.ModelCacheSpec{Model: "s3://bucket/m?source=s", Revision: "0123456789abcdef",
			NodeSelector: map[string]string{"pool": "gpu"},
			NodeAffinity: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "k", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}},
				MatchFields:      []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"x"}}},
			}}},
			Tolerations: []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpEqual, Value: "yes", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs}},
		},
	}
	st := v1alpha1.ModelCacheStatus{ObservedGeneration: 1, NodesWanted: 2, NodesReady: 1, Ready: "1/2", Revision: "0123456789abcdef",
		SizeBytes: 100, Size: "100 B", NodesOmitted: 3,
		Nodes:      []v1alpha1.NodeState{{Node: "n", State: v1alpha1.StateFetching, Revision: "0123456789abcdef", Bytes: 100, DoneBytes: 50, Error: "e"}},
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: 1, LastTransitionTime: now, Reason: "R", Message: "m"}}}
	res := dyn.Resource(v1alpha1.ModelCaches).Namespace(ns)
	created, err := res.Create(ctx, toUnstructured(t, &mc), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Delete(ctx, mc.Name, metav1.DeleteOptions{})
	mc.Status = st
	withStatus := toUnstructured(t, &mc)
	withStatus.SetResourceVersion(created.GetResourceVersion())
	got, err := res.UpdateStatus(ctx, withStatus, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var back v1alpha1.ModelCache
	fromUnstructured(t, got, &back)
	if d := cmp.Diff(mc.Spec, back.Spec); d != "" {
		t.Errorf("ModelCache spec lost fields (-sent +stored):\n%s", d)
	}
	if d := cmp.Diff(mc.Status, back.Status); d != "" {
		t.Errorf("ModelCache status lost fields (-sent +stored):\n%s", d)
	}

	node := v1alpha1.ModelCacheNode{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCacheNode},
		ObjectMeta: metav1.ObjectMeta{Name: "crd-roundtrip-node"},
		Status: v1alpha1.ModelCacheNodeStatus{CapacityBytes: 1000, UsedBytes: 10, ModelsOmitted: 2,
			Models:  []v1alpha1.NodeModel{{Ref: "s3://bucket/m?source=s", Revision: "0123456789abcdef", Current: true, State: v1alpha1.StateFailed, Bytes: 1, DoneBytes: 1, Error: "e"}},
			Refused: []v1alpha1.Refusal{{ModelCache: "ns/name", Error: "e"}}},
	}
	nres := dyn.Resource(v1alpha1.ModelCacheNodes)
	gotNode, err := nres.Create(ctx, toUnstructured(t, &node), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nres.Delete(ctx, node.Name, metav1.DeleteOptions{})
	var backNode v1alpha1.ModelCacheNode
	fromUnstructured(t, gotNode, &backNode)
	if d := cmp.Diff(node.Status, backNode.Status); d != "" {
		t.Errorf("ModelCacheNode status lost fields (-sent +stored):\n%s", d)
	}
}

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: u}
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatal(err)
	}
}
