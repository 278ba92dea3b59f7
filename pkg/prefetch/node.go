package prefetch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
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

// syncNode patches the node's warm-model labels and annotation: a label for
// every model the cache holds (its current revision), none for others.
func (c *Controller) syncNode(ctx context.Context, node *corev1.Node, desired map[string]*want, models []agentapi.ModelStatus) error {
	refs := map[string]model.Ref{}
	for key, w := range desired {
		refs[key] = w.ref
	}
	for key := range decodeModels(node.Annotations[AnnotationModels]) {
		if r, err := model.ParseRef(key); err == nil {
			refs[r.String()] = r
		}
	}
	// Every model the node holds is labelled, not only the ones workloads
	// prefetch: a model a pod's volume brought is as warm, and the pod
	// webhook (pkg/webhook) sends the next pod of it here.
	for _, m := range models {
		if r, err := model.ParseRef(m.Ref); err == nil && m.Current && r.Revision == "" {
			refs[r.String()] = r
		}
	}
	ready := map[string]string{} // ref → label key
	for key, r := range refs {
		if held, _ := heldRevision(models, r); held {
			ready[key] = LabelKey(r)
		}
	}
	patch, changed := nodePatch(node, ready)
	if !changed {
		return nil
	}
	_, err := c.client.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "modelcache-agent"})
	if err != nil {
		return fmt.Errorf("patch node %s: %w", node.Name, err)
	}
	c.log.Info("node labels updated", "models", len(ready))
	return nil
}
