// Package webhook is modelcache's mutating admission webhook for pods: a
// pod with a modelcache volume (an inline CSI volume of the driver, a claim
// or a generic ephemeral volume of a model-cache StorageClass) gets a node
// affinity for the warm-node labels of its models (prefetch.LabelKey), so
// it lands where its model is already cached and nobody copies a label key
// into a pod template.
//
// The annotation modelcache.io/schedule on the pod, else on its namespace,
// says how: "prefer" (the default: a preferred term per model, the pod
// still runs on a cold node), "require" (the pod waits for a warm node) or
// "off". The webhook never refuses a pod: whatever goes wrong, the pod is
// admitted unchanged with a warning, and its configuration's failure
// policy is Ignore, so an outage never blocks pods either.
package webhook

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
	"github.com/modelcache/modelcache/pkg/provisioner"
)

// AnnotationSchedule on a pod or a namespace picks the mode.
const AnnotationSchedule = "modelcache.io/schedule"

// Modes of AnnotationSchedule.
const (
	ModePrefer  = "prefer"
	ModeRequire = "require"
	ModeOff     = "off"
)

// preferWeight is the weight of the biggest model's preferred term: high,
// so a warm node wins over the scheduler's spreading and resource scores
// (which sum to at most 100 per plugin). A smaller model weighs in
// proportion to its size (at least 1), when a Sizer knows the sizes: a node
// holding the 15 GiB base model beats one holding only its 100 MiB adapter.
// A model of unknown size weighs preferWeight.
const preferWeight = 100

// Sizer is a Lookup that also knows how big a model is: the nodes' reports
// (ModelCacheNode), in the controller.
type Sizer interface {
	// ModelSize is the size of the revision some node holds of ref's
	// location, and false if no node reports one.
	ModelSize(ref model.Ref) (int64, bool)
}

// Lookup reads what a pod's volumes refer to: listers in the controller.
// A missing object is (nil, nil) or an error; either way the volume is
// skipped with a warning.
type Lookup interface {
	Claim(namespace, name string) (*corev1.PersistentVolumeClaim, error)
	StorageClass(name string) (*storagev1.StorageClass, error)
	Namespace(name string) (*corev1.Namespace, error)
}

// Mutator computes a pod's new affinity.
type Mutator struct {
	DriverName string
	Lookup     Lookup
}

// Affinity returns the affinity pod should have (nil, false: leave it as
// it is) and warnings for the user (kubectl prints them).
func (m *Mutator) Affinity(pod *corev1.Pod, namespace string) (*corev1.Affinity, bool, []string) {
	mode, warnings := m.mode(pod, namespace)
	if mode == ModeOff {
		return nil, false, warnings
	}
	refs, w := m.models(pod, namespace)
	warnings = append(warnings, w...)
	if len(refs) == 0 {
		return nil, false, warnings
	}
	keys := make([]string, 0, len(refs))
	for _, r := range refs {
		if k := prefetch.LabelKey(r); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	weights := m.weights(refs)
	aff := &corev1.Affinity{}
	if pod.Spec.Affinity != nil {
		aff = pod.Spec.Affinity.DeepCopy()
	}
	if aff.NodeAffinity == nil {
		aff.NodeAffinity = &corev1.NodeAffinity{}
	}
	var changed bool
	if mode == ModeRequire {
		changed = require(aff.NodeAffinity, keys)
	} else {
		changed = prefer(aff.NodeAffinity, keys, weights)
	}
	return aff, changed, warnings
}

// mode is the pod's annotation, else its namespace's, else prefer.
func (m *Mutator) mode(pod *corev1.Pod, namespace string) (string, []string) {
	v, where := pod.Annotations[AnnotationSchedule], "the pod"
	if v == "" && m.Lookup != nil {
		if ns, err := m.Lookup.Namespace(namespace); err == nil && ns != nil {
			v, where = ns.Annotations[AnnotationSchedule], "namespace "+namespace
		}
	}
	switch v = strings.TrimSpace(v); v {
	case "":
		return ModePrefer, nil
	case ModePrefer, ModeRequire, ModeOff:
		return v, nil
	}
	return ModePrefer, []string{fmt.Sprintf("modelcache: %s has %s=%q; want require, prefer or off: preferring warm nodes",
		where, AnnotationSchedule, trim(v))}
}

// models are the refs of pod's modelcache volumes, in volume order.
func (m *Mutator) models(pod *corev1.Pod, namespace string) ([]model.Ref, []string) {
	var refs []model.Ref
	var warnings []string
	add := func(vol string, attrs map[string]string) {
		r, err := csi.ParseVolumeAttributes(attrs)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("modelcache: volume %q: %v", vol, err))
			return
		}
		refs = append(refs, r)
	}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.CSI != nil && v.CSI.Driver == m.DriverName:
			add(v.Name, v.CSI.VolumeAttributes)
		case v.Ephemeral != nil && v.Ephemeral.VolumeClaimTemplate != nil:
			t := v.Ephemeral.VolumeClaimTemplate
			if attrs, ok, err := m.claimAttributes(t.Annotations, t.Spec.StorageClassName); err != nil {
				warnings = append(warnings, fmt.Sprintf("modelcache: volume %q: %v", v.Name, err))
			} else if ok {
				add(v.Name, attrs)
			}
		case v.PersistentVolumeClaim != nil && m.Lookup != nil:
			c, err := m.Lookup.Claim(namespace, v.PersistentVolumeClaim.ClaimName)
			if err != nil || c == nil {
				continue // not ours to judge: the scheduler reports a missing claim
			}
			if attrs, ok, err := m.claimAttributes(c.Annotations, c.Spec.StorageClassName); err != nil {
				warnings = append(warnings, fmt.Sprintf("modelcache: volume %q (claim %s): %v", v.Name, c.Name, err))
			} else if ok {
				add(v.Name, attrs)
			}
		}
	}
	return refs, warnings
}

// claimAttributes are the volume attributes a claim of class would get,
// and false when the class is not one of this driver's.
func (m *Mutator) claimAttributes(annotations map[string]string, class *string) (map[string]string, bool, error) {
	if class == nil || *class == "" || m.Lookup == nil {
		return nil, false, nil
	}
	sc, err := m.Lookup.StorageClass(*class)
	if err != nil || sc == nil || sc.Provisioner != m.DriverName {
		return nil, false, nil
	}
	attrs := provisioner.ClaimAttributes(sc.Parameters, annotations)
	if strings.TrimSpace(attrs[csi.AttrModel]) == "" {
		return nil, false, fmt.Errorf("names no model (annotation %s or parameter model of StorageClass %s)", provisioner.AnnModel, sc.Name)
	}
	return attrs, true, nil
}

// weights are the preferred terms' weights by label key (see preferWeight).
func (m *Mutator) weights(refs []model.Ref) map[string]int32 {
	out := map[string]int32{}
	sizer, ok := m.Lookup.(Sizer)
	if !ok {
		return out
	}
	sizes := map[string]int64{}
	var largest int64
	for _, r := range refs {
		if n, ok := sizer.ModelSize(r); ok && n > 0 {
			sizes[prefetch.LabelKey(r)] = n
			largest = max(largest, n)
		}
	}
	for k, n := range sizes {
		out[k] = int32(max(1, min(preferWeight, n*preferWeight/largest)))
	}
	return out
}

// prefer adds a preferred term for each key not preferred already, of its
// weight (preferWeight if it has none).
func prefer(na *corev1.NodeAffinity, keys []string, weights map[string]int32) bool {
	changed := false
	for _, k := range keys {
		if slices.ContainsFunc(na.PreferredDuringSchedulingIgnoredDuringExecution, func(t corev1.PreferredSchedulingTerm) bool {
			return hasKey(t.Preference, k)
		}) {
			continue
		}
		na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.PreferredSchedulingTerm{Weight: cmp.Or(weights[k], preferWeight), Preference: corev1.NodeSelectorTerm{
				MatchExpressions: []corev1.NodeSelectorRequirement{warm(k)}}})
		changed = true
	}
	return changed
}

// require adds every key to every required term (terms are ORed, the
// expressions of one term ANDed), or makes one term of them.
func require(na *corev1.NodeAffinity, keys []string) bool {
	req := na.RequiredDuringSchedulingIgnoredDuringExecution
	if req == nil || len(req.NodeSelectorTerms) == 0 {
		term := corev1.NodeSelectorTerm{}
		for _, k := range keys {
			term.MatchExpressions = append(term.MatchExpressions, warm(k))
		}
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}}
		return true
	}
	changed := false
	for i := range req.NodeSelectorTerms {
		for _, k := range keys {
			if !hasKey(req.NodeSelectorTerms[i], k) {
				req.NodeSelectorTerms[i].MatchExpressions = append(req.NodeSelectorTerms[i].MatchExpressions, warm(k))
				changed = true
			}
		}
	}
	return changed
}

func warm(key string) corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: []string{prefetch.LabelReady}}
}

func hasKey(t corev1.NodeSelectorTerm, key string) bool {
	return slices.ContainsFunc(t.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool { return e.Key == key })
}

// trim shortens a tenant-written value for a message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
