package prefetch

import (
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// decodeModels reads the AnnotationModels value (ref → label key); a value
// that does not parse counts as empty (the next patch rewrites it).
func decodeModels(v string) map[string]string {
	out := map[string]string{}
	if v != "" {
		_ = json.Unmarshal([]byte(v), &out)
	}
	return out
}

// nodePatch is the strategic merge patch that makes node's warm-model labels
// and annotation say exactly ready (ref → label key), and whether anything
// needs to change. Labels of other owners are never in the patch.
func nodePatch(node *corev1.Node, ready map[string]string) ([]byte, bool) {
	labelPatch := map[string]any{}
	want := map[string]bool{}
	for _, k := range ready {
		want[k] = true
		if node.Labels[k] != LabelReady {
			labelPatch[k] = LabelReady
		}
	}
	for k := range node.Labels {
		if strings.HasPrefix(k, LabelPrefix) && !want[k] {
			labelPatch[k] = nil // delete
		}
	}
	var annotation any // nil deletes it
	if len(ready) > 0 {
		b, _ := json.Marshal(ready) // keys sorted
		annotation = string(b)
	}
	cur, has := node.Annotations[AnnotationModels]
	annotationChanged := (annotation == nil && has) || (annotation != nil && annotation.(string) != cur)
	if len(labelPatch) == 0 && !annotationChanged {
		return nil, false
	}
	meta := map[string]any{}
	if len(labelPatch) > 0 {
		meta["labels"] = labelPatch
	}
	if annotationChanged {
		meta["annotations"] = map[string]any{AnnotationModels: annotation}
	}
	b, _ := json.Marshal(map[string]any{"metadata": meta})
	return b, true
}
