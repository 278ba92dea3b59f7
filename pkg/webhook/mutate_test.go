package webhook

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

const driver = "modelcache.csi.io"

type fakeLookup struct {
	claims     map[string]*corev1.PersistentVolumeClaim
	classes    map[string]*storagev1.StorageClass
	namespaces map[string]*corev1.Namespace
}

func (f fakeLookup) Claim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	if c, ok := f.claims[ns+"/"+name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumeclaims"}, name)
}

func (f fakeLookup) StorageClass(name string) (*storagev1.StorageClass, error) {
	if c, ok := f.classes[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "storageclasses"}, name)
}

func (f fakeLookup) Namespace(name string) (*corev1.Namespace, error) { return f.namespaces[name], nil }

func key(t *testing.T, ref string) string {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return prefetch.LabelKey(r)
}

func inline(name, ref string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: driver, VolumeAttributes: map[string]string{"model": ref}}}}
}

func lookup() fakeLookup {
	class := "model-cache"
	return fakeLookup{
		classes: map[string]*storagev1.StorageClass{
			"model-cache": {ObjectMeta: metav1.ObjectMeta{Name: "model-cache"}, Provisioner: driver, Parameters: map[string]string{"source": "minio"}},
			"fast-ssd":    {ObjectMeta: metav1.ObjectMeta{Name: "fast-ssd"}, Provisioner: "ebs.csi.aws.com"},
		},
		claims: map[string]*corev1.PersistentVolumeClaim{
			"ml/llama": {ObjectMeta: metav1.ObjectMeta{Name: "llama", Annotations: map[string]string{"modelcache.io/model": "s3://models/llama"}},
				Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class}},
		},
		namespaces: map[string]*corev1.Namespace{
			"strict":  {ObjectMeta: metav1.ObjectMeta{Name: "strict", Annotations: map[string]string{AnnotationSchedule: "require"}}},
			"opt-out": {ObjectMeta: metav1.ObjectMeta{Name: "opt-out", Annotations: map[string]string{AnnotationSchedule: "off"}}},
		},
	}
}

func preferred(a *corev1.Affinity) []string {
	var keys []string
	if a == nil || a.NodeAffinity == nil {
		return nil
	}
	for _, t := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		for _, e := range t.Preference.MatchExpressions {
			if strings.HasPrefix(e.Key, prefetch.LabelPrefix) && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 && e.Values[0] == "ready" && t.Weight > 0 {
				keys = append(keys, e.Key)
			}
		}
	}
	return keys
}

// Every kind of modelcache volume brings its model's label, under the
// class's parameters (the claim's source=minio comes from its class).
func TestAffinityFromEveryVolumeKind(t *testing.T) {
	class := "model-cache"
	other := "fast-ssd"
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		inline("a", "hf://org/m?include=*.json"),
		{Name: "b", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "llama"}}},
		{Name: "c", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"modelcache.io/model": "oci://ghcr.io/org/m:v1"}},
			Spec:       corev1.PersistentVolumeClaimSpec{StorageClassName: &class}}}}},
		{Name: "d", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &other}}}}},
		{Name: "e", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "missing"}}},
		{Name: "f", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "other.csi", VolumeAttributes: map[string]string{"model": "s3://x/y"}}}},
	}}}
	m := &Mutator{DriverName: driver, Lookup: lookup()}
	aff, changed, warnings := m.Affinity(pod, "ml")
	if !changed || len(warnings) != 0 {
		t.Fatalf("changed %t, warnings %q", changed, warnings)
	}
	got := preferred(aff)
	want := []string{key(t, "hf://org/m?include=*.json"), key(t, "s3://models/llama?source=minio"), key(t, "oci://ghcr.io/org/m:v1?source=minio")}
	if len(got) != 3 {
		t.Fatalf("preferred %q, want the keys of %q", got, want)
	}
	for _, k := range want {
		if !strings.Contains(strings.Join(got, " "), k) {
			t.Errorf("no preferred term for %s in %q", k, got)
		}
	}
	// Admitting the mutated pod again changes nothing (reinvocation).
	pod.Spec.Affinity = aff
	if _, changed, _ := m.Affinity(pod, "ml"); changed {
		t.Error("a second pass changed the affinity again")
	}
}

// require ANDs the warm labels into every required term the user wrote,
// keeping theirs; off and no modelcache volume leave the pod alone.
func TestModes(t *testing.T) {
	m := &Mutator{DriverName: driver, Lookup: lookup()}
	user := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{
			{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpIn, Values: []string{"a100"}}}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpIn, Values: []string{"h100"}}}},
		}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationSchedule: "require"}},
		Spec: corev1.PodSpec{Affinity: user, Volumes: []corev1.Volume{inline("a", "s3://models/llama")}}}
	aff, changed, _ := m.Affinity(pod, "ml")
	k := key(t, "s3://models/llama")
	terms := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if !changed || len(terms) != 2 || len(terms[0].MatchExpressions) != 2 || terms[0].MatchExpressions[1].Key != k || terms[1].MatchExpressions[1].Key != k {
		t.Fatalf("require: %+v", terms)
	}
	if len(user.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions) != 1 {
		t.Error("the pod's own affinity object was modified in place")
	}

	// The namespace's annotation, when the pod has none.
	pod = &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{inline("a", "s3://models/llama")}}}
	if aff, _, _ := m.Affinity(pod, "strict"); aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Error("namespace require: no required term")
	}
	if _, changed, _ := m.Affinity(pod, "opt-out"); changed {
		t.Error("namespace off: changed")
	}
	pod.Annotations = map[string]string{AnnotationSchedule: "prefer"}
	if aff, _, _ := m.Affinity(pod, "strict"); len(preferred(aff)) != 1 || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		t.Error("the pod's prefer does not win over its namespace's require")
	}
	pod.Annotations = map[string]string{AnnotationSchedule: "always!"}
	if aff, _, w := m.Affinity(pod, "ml"); len(preferred(aff)) != 1 || len(w) != 1 || !strings.Contains(w[0], "always!") {
		t.Errorf("a bad mode: %v, warnings %q; want prefer with a warning", aff, w)
	}
	if _, changed, _ := m.Affinity(&corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "x", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}, "ml"); changed {
		t.Error("a pod without modelcache volumes changed")
	}
}

// A volume whose model does not parse is skipped with a warning naming
// it; the pod is still admitted with the others' terms.
func TestBadVolumeWarns(t *testing.T) {
	m := &Mutator{DriverName: driver, Lookup: lookup()}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{inline("bad", "ftp://x"), inline("good", "s3://models/llama")}}}
	aff, changed, w := m.Affinity(pod, "ml")
	if !changed || len(preferred(aff)) != 1 || len(w) != 1 || !strings.Contains(w[0], `"bad"`) {
		t.Errorf("changed %t, affinity %v, warnings %q", changed, aff, w)
	}
}

// sizedLookup is a Lookup that knows models' sizes by ref location.
type sizedLookup struct {
	fakeLookup
	sizes map[string]int64 // ref.ID() → bytes
}

func (s sizedLookup) ModelSize(r model.Ref) (int64, bool) {
	n, ok := s.sizes[r.ID()]
	return n, ok
}

// With sizes known, each model weighs in proportion to its size, the
// biggest 100 and none under 1; a model no node reports weighs 100.
func TestWeightsBySize(t *testing.T) {
	base, lora, unknown := "s3://models/llama?source=minio", "s3://models/llama-lora?source=minio", "s3://models/new?source=minio"
	id := func(ref string) string {
		r, err := model.ParseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		return r.ID()
	}
	m := &Mutator{DriverName: driver, Lookup: sizedLookup{lookup(), map[string]int64{
		id(base): 15 << 30, id(lora): 60 << 20}}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{inline("base", base), inline("lora", lora), inline("new", unknown)}}}
	aff, changed, warnings := m.Affinity(pod, "ml")
	if !changed || len(warnings) != 0 {
		t.Fatalf("changed %v, warnings %v", changed, warnings)
	}
	got := map[string]int32{}
	for _, term := range aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		got[term.Preference.MatchExpressions[0].Key] = term.Weight
	}
	want := map[string]int32{key(t, base): 100, key(t, lora): 1, key(t, unknown): 100}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("weight of %s = %d, want %d (all: %v)", k, got[k], w, got)
		}
	}

	// One model alone weighs 100 whatever its size.
	pod = &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{inline("lora", lora)}}}
	aff, _, _ = m.Affinity(pod, "ml")
	if w := aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].Weight; w != 100 {
		t.Errorf("a lone model weighs %d, want 100", w)
	}
}
