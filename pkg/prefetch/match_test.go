package prefetch

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/pkg/model"
)

func TestFits(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"accel": "gpu", "zone": "a"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "dedicated", Value: "ml", Effect: corev1.TaintEffectNoSchedule},
			{Key: "soft", Effect: corev1.TaintEffectPreferNoSchedule}, // never blocks
			// the node's condition, not placement policy: ignored
			{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
			{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule},
		}}}
	tol := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ml", Effect: corev1.TaintEffectNoSchedule}}
	affinity := func(op corev1.NodeSelectorOperator, vals ...string) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: op, Values: vals}}}}}}}
	}
	warmExpr := corev1.NodeSelectorRequirement{Key: LabelPrefix + "0123456789abcdef", Operator: corev1.NodeSelectorOpIn, Values: []string{"ready"}}
	warm := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{warmExpr}}}}}}
	warmInZone := func(zone string) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				warmExpr, {Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{zone}}}}}}}}
	}
	for _, tc := range []struct {
		name string
		spec corev1.PodSpec
		ok   bool
		why  string
	}{
		{"tolerated", corev1.PodSpec{Tolerations: tol}, true, ""},
		{"untolerated taint", corev1.PodSpec{}, false, "dedicated=ml:NoSchedule"},
		{"selector matches", corev1.PodSpec{NodeSelector: map[string]string{"accel": "gpu"}, Tolerations: tol}, true, ""},
		{"selector differs", corev1.PodSpec{NodeSelector: map[string]string{"accel": "cpu"}, Tolerations: tol}, false, "nodeSelector"},
		{"affinity In", corev1.PodSpec{Affinity: affinity(corev1.NodeSelectorOpIn, "a", "b"), Tolerations: tol}, true, ""},
		{"affinity NotIn", corev1.PodSpec{Affinity: affinity(corev1.NodeSelectorOpNotIn, "a"), Tolerations: tol}, false, "affinity"},
		{"other node name", corev1.PodSpec{NodeName: "n2", Tolerations: tol}, false, "n2"},
		{"tolerate all", corev1.PodSpec{Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}, true, ""},
		// Requiring warm nodes must not stop the model from coming to cold ones.
		{"requires warm label", corev1.PodSpec{Affinity: warm, Tolerations: tol}, true, ""},
		{"requires warm label and zone a", corev1.PodSpec{Affinity: warmInZone("a"), Tolerations: tol}, true, ""},
		{"requires warm label and zone b", corev1.PodSpec{Affinity: warmInZone("b"), Tolerations: tol}, false, "affinity"},
		{"selects warm label", corev1.PodSpec{NodeSelector: map[string]string{LabelPrefix + "0123456789abcdef": "ready", "accel": "gpu"}, Tolerations: tol}, true, ""},
	} {
		ok, why := Fits(&tc.spec, node)
		if ok != tc.ok || !strings.Contains(why, tc.why) {
			t.Errorf("%s: Fits = %v %q, want %v and a reason containing %q", tc.name, ok, why, tc.ok, tc.why)
		}
	}
}

func TestParseAnnotationAndLabelKey(t *testing.T) {
	refs, errs := ParseAnnotation(" s3://bkt/m , s3://bkt/m,s3://bkt/n?revision=0123456789abcdef, http://x ,")
	if len(refs) != 2 || len(errs) != 1 {
		t.Fatalf("refs %v errs %v", refs, errs)
	}
	plain := refs[0]
	if got := LabelKey(plain); got != LabelPrefix+plain.ID() {
		t.Errorf("LabelKey of a ref without revision = %s, want prefix + ID %s", got, plain.ID())
	}
	pinned := refs[1]
	if LabelKey(pinned) == LabelKey(pinned.Location()) {
		t.Error("a revision must give another label")
	}
	long, err := model.ParseRef("s3://bucket/" + strings.Repeat("very-long-prefix/", 40) + "m?source=s")
	if err != nil {
		t.Fatal(err)
	}
	if k := LabelKey(long); len(k)-len(LabelPrefix) > 63 {
		t.Errorf("label name too long: %s", k)
	}
	// The key docs/prefetch.md and deploy/examples/prefetch-deployment.yaml show.
	doc, err := model.ParseRef("s3://models/llama-3-8b?source=minio")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := LabelKey(doc), "model.modelcache.io/645385a09a1af71a0b98d9716d5b7ed4"; got != want {
		t.Errorf("LabelKey(%s) = %s; docs/prefetch.md and deploy/examples show %s: update them", doc, got, want)
	}
}

// Patterns hold commas too: a piece that does not start a ref continues the
// ref before it.
func TestParseAnnotationWithPatterns(t *testing.T) {
	refs, errs := ParseAnnotation("hf://org/m@main?include=*.safetensors,*.json&exclude=original/, s3://bkt/m?include=a/,b/ ,hf://org/n")
	if len(errs) != 0 || len(refs) != 3 {
		t.Fatalf("refs %v errs %v", refs, errs)
	}
	if refs[0].Include != "*.safetensors,*.json" || refs[0].Exclude != "original/" || refs[1].Include != "a/,b/" || refs[2].Repo != "org/n" {
		t.Errorf("refs %+v", refs)
	}
}

func TestNodePatch(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"keep": "x", LabelPrefix + "aaaaaaaaaaaaaaaa": "ready", LabelPrefix + "bbbbbbbbbbbbbbbb": "ready"},
		Annotations: map[string]string{AnnotationModels: `{"s3://b/a":"model.modelcache.io/aaaaaaaaaaaaaaaa","s3://b/b":"model.modelcache.io/bbbbbbbbbbbbbbbb"}`},
	}}
	patch, changed := nodePatch(node, map[string]string{"s3://b/a": LabelPrefix + "aaaaaaaaaaaaaaaa", "s3://b/c": LabelPrefix + "cccccccccccccccc"})
	want := `{"metadata":{"annotations":{"modelcache.io/models":"{\"s3://b/a\":\"model.modelcache.io/aaaaaaaaaaaaaaaa\",\"s3://b/c\":\"model.modelcache.io/cccccccccccccccc\"}"},` +
		`"labels":{"model.modelcache.io/bbbbbbbbbbbbbbbb":null,"model.modelcache.io/cccccccccccccccc":"ready"}}}`
	if !changed || string(patch) != want {
		t.Errorf("patch %s\nwant  %s", patch, want)
	}
	if _, changed := nodePatch(node, map[string]string{"s3://b/a": LabelPrefix + "aaaaaaaaaaaaaaaa", "s3://b/b": LabelPrefix + "bbbbbbbbbbbbbbbb"}); changed {
		t.Error("no change wanted a patch")
	}
	patch, _ = nodePatch(node, nil)
	if want := `{"metadata":{"annotations":{"modelcache.io/models":null},"labels":{"model.modelcache.io/aaaaaaaaaaaaaaaa":null,"model.modelcache.io/bbbbbbbbbbbbbbbb":null}}}`; string(patch) != want {
		t.Errorf("clearing patch %s", patch)
	}
}
