package prefetch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	"github.com/modelcache/modelcache/pkg/model"
)

// Names this package reads and writes on Kubernetes objects.
const (
	// AnnotationPrefetch on a Deployment or StatefulSet names the models its
	// pods need: "s3://bucket/a, s3://bucket/b?source=minio".
	AnnotationPrefetch = "modelcache.io/prefetch"
	// AnnotationModels on a Node maps every model labelled ready on it to its
	// label key, as JSON: {"s3://bucket/a":"model.modelcache.io/0123456789abcdef"}.
	AnnotationModels = "modelcache.io/models"
	// LabelPrefix starts the key of every warm-model label on a Node.
	LabelPrefix = "model.modelcache.io/"
	// LabelReady is the value of a warm-model label.
	LabelReady = "ready"
	// HolderPrefix starts the holder of every pin this package takes:
	// "workload:deployment/NAMESPACE/NAME" or "workload:statefulset/NAMESPACE/NAME".
	HolderPrefix = "workload:"
)

// conditionTaintPrefix starts the keys of the taints Kubernetes sets from a
// node's conditions and cordon (see Fits).
const conditionTaintPrefix = "node.kubernetes.io/"

// LabelKey is the Node label that says ref is ready on the node:
// "model.modelcache.io/" + 32 hex digits of the SHA-256 of ref's canonical
// string. For a ref without a revision that is ref.ID(), the directory name
// the cache uses. The key fits the label limits whatever the ref's length,
// and no ref can be built to claim another's label.
func LabelKey(ref model.Ref) string {
	sum := sha256.Sum256([]byte(ref.String()))
	return LabelPrefix + hex.EncodeToString(sum[:16])
}

// ParseAnnotation splits a prefetch annotation on commas into refs, in the
// canonical form and without duplicates. Entries that do not parse are
// returned as errors; the others still count.
func ParseAnnotation(v string) ([]model.Ref, []error) {
	var refs []model.Ref
	var errs []error
	seen := map[string]bool{}
	for _, part := range splitRefs(v) {
		r, err := model.ParseRef(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !seen[r.String()] {
			seen[r.String()] = true
			refs = append(refs, r)
		}
	}
	if len(refs) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%w: empty; want one or more refs (s3://, gs://, az://, hf://, oci://), separated by commas", model.ErrInvalidRef))
	}
	return refs, errs
}

// splitRefs splits a comma-separated list of refs. A piece that does not
// start a ref ("SCHEME://") continues the one before it: refs hold commas
// of their own, in include and exclude patterns
// ("hf://org/m?include=*.safetensors,*.json").
func splitRefs(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		p := strings.TrimSpace(part)
		switch {
		case p == "":
		case len(out) > 0 && !startsRef(p):
			out[len(out)-1] += "," + p
		default:
			out = append(out, p)
		}
	}
	return out
}

func startsRef(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return false
	}
	for _, c := range scheme {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Fits says whether a pod with spec could be scheduled on node as far as
// placement rules go (nodeName, nodeSelector, required node affinity,
// NoSchedule and NoExecute taints against tolerations), the same way the
// scheduler's filters decide it. If not, why says why.
//
// Two things the scheduler also weighs are left out on purpose. Resources: a
// warm model is worth having on a node that is full today. And the taints
// Kubernetes itself puts on a node for its current condition
// (node.kubernetes.io/not-ready, unreachable, unschedulable, memory-pressure,
// …; the API server adds not-ready to every new Node): they say how the node
// is now, not which workloads belong there, and honouring them would drop
// every workload pin whenever a node blips or is cordoned.
func Fits(spec *corev1.PodSpec, node *corev1.Node) (ok bool, why string) {
	if spec.NodeName != "" && spec.NodeName != node.Name {
		return false, fmt.Sprintf("pod template names node %s", spec.NodeName)
	}
	selector, affinity := withoutWarmLabels(spec)
	match, err := nodeaffinity.NewRequiredNodeAffinity(selector, affinity).Match(node)
	if err != nil {
		return false, fmt.Sprintf("node affinity: %v", err)
	}
	if !match {
		return false, "nodeSelector or required node affinity does not match"
	}
	taint, untolerated := v1helper.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints, spec.Tolerations,
		func(t *corev1.Taint) bool {
			return (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) &&
				!strings.HasPrefix(t.Key, conditionTaintPrefix)
		}, false)
	if untolerated {
		return false, fmt.Sprintf("untolerated taint %s", taint.ToString())
	}
	return true, ""
}

// withoutWarmLabels returns spec's nodeSelector and affinity with every
// requirement on a warm-model label dropped. A required term left with no
// requirements matches every node, so then nothing is required at all.
func withoutWarmLabels(spec *corev1.PodSpec) (map[string]string, *corev1.Affinity) {
	selector := spec.NodeSelector
	for k := range spec.NodeSelector {
		if strings.HasPrefix(k, LabelPrefix) {
			selector = map[string]string{}
			for k, v := range spec.NodeSelector {
				if !strings.HasPrefix(k, LabelPrefix) {
					selector[k] = v
				}
			}
			break
		}
	}
	aff := spec.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return selector, aff
	}
	req := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	terms := make([]corev1.NodeSelectorTerm, 0, len(req.NodeSelectorTerms))
	for _, term := range req.NodeSelectorTerms {
		var exprs []corev1.NodeSelectorRequirement
		dropped := false
		for _, e := range term.MatchExpressions {
			if strings.HasPrefix(e.Key, LabelPrefix) {
				dropped = true
				continue
			}
			exprs = append(exprs, e)
		}
		if dropped && len(exprs) == 0 && len(term.MatchFields) == 0 {
			return selector, nil // this term now matches any node
		}
		term.MatchExpressions = exprs
		terms = append(terms, term)
	}
	return selector, &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}
}
