package modelstatus

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
)

const (
	ref = "s3://bucket/llama?source=s"
	r1  = "1111111111111111"
	r2  = "2222222222222222"
)

func nodeNamed(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func report(models ...v1alpha1.NodeModel) *nodeIndex {
	return indexReport(&v1alpha1.ModelCacheNodeStatus{Models: models})
}

func TestAggregate(t *testing.T) {
	gpu := map[string]string{"pool": "gpu"}
	nodes := []*corev1.Node{nodeNamed("a", gpu), nodeNamed("b", gpu), nodeNamed("c", gpu), nodeNamed("d", gpu),
		nodeNamed("e", gpu), nodeNamed("cpu", map[string]string{"pool": "cpu"})}
	ready := func(rev string, current bool) v1alpha1.NodeModel {
		return v1alpha1.NodeModel{Ref: ref, Revision: rev, Current: current, State: v1alpha1.StateReady, Bytes: 100}
	}
	reports := map[string]*nodeIndex{
		"a": report(ready(r2, true)),
		"b": report(ready(r2, true), ready(r1, false)),
		// c holds an old revision and fetches the new one: fetching.
		"c": report(ready(r1, true), v1alpha1.NodeModel{Ref: ref, State: v1alpha1.StateFetching, Bytes: 100, DoneBytes: 40}),
		"d": report(v1alpha1.NodeModel{Ref: ref, State: v1alpha1.StateFailed, Error: "access denied"}),
		// e reports nothing of it: pending.
		"e":   report(),
		"cpu": report(ready(r2, true)),
	}
	mc := &v1alpha1.ModelCache{ObjectMeta: metav1.ObjectMeta{Name: "llama", Namespace: "ml", Generation: 3},
		Spec: v1alpha1.ModelCacheSpec{Model: ref, NodeSelector: gpu}}
	st := Aggregate(mc, Wanted(&mc.Spec, nodes), reports)
	// c holds r1 as current, so it counts as ready too: 3 of 5.
	if st.Ready != "3/5" || st.NodesWanted != 5 || st.NodesReady != 3 || st.ObservedGeneration != 3 {
		t.Fatalf("status %+v", st)
	}
	if st.Revision != r2 || st.Size != "100 B" {
		t.Errorf("revision %q size %q; want the majority's r2, 100 B", st.Revision, st.Size)
	}
	want := []string{"d Failed", "e Pending", "a Ready", "b Ready", "c Ready"}
	for i, n := range st.Nodes {
		if got := n.Node + " " + n.State; i >= len(want) || got != want[i] {
			t.Errorf("nodes[%d] = %s; want %v", i, got, want)
		}
	}
	for typ, want := range map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse,
		v1alpha1.ConditionProgressing: metav1.ConditionFalse, v1alpha1.ConditionDegraded: metav1.ConditionTrue} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Status != want {
			t.Errorf("condition %s = %+v; want %s", typ, c, want)
		}
	}

	// Pinned to r2: c's r1 does not count, its download does.
	mc.Spec.Revision = r2
	st = Aggregate(mc, Wanted(&mc.Spec, nodes), reports)
	if st.Ready != "2/5" || st.Nodes[1].Node != "c" || st.Nodes[1].State != v1alpha1.StateFetching || st.Nodes[1].DoneBytes != 40 {
		t.Errorf("pinned: %+v", st)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionProgressing); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("pinned: progressing %+v", c)
	}

	// A node that refuses this ModelCache fails, whatever it holds.
	reports["a"] = indexReport(&v1alpha1.ModelCacheNodeStatus{Models: []v1alpha1.NodeModel{ready(r2, true)},
		Refused: []v1alpha1.Refusal{{ModelCache: "ml/llama", Error: "source s is not for namespace ml"}}})
	st = Aggregate(mc, Wanted(&mc.Spec, nodes), reports)
	if st.Ready != "1/5" || st.Nodes[0].Node != "a" || st.Nodes[0].Error == "" {
		t.Errorf("refused: %+v", st)
	}

	// A spec that does not parse: every node pending, Degraded says why.
	bad := &v1alpha1.ModelCache{Spec: v1alpha1.ModelCacheSpec{Model: "ftp://x"}}
	st = Aggregate(bad, Wanted(&bad.Spec, nodes), reports)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDegraded); c == nil || c.Reason != "InvalidSpec" || st.NodesReady != 0 {
		t.Errorf("invalid spec: %+v", st)
	}

	// No node matches.
	none := &v1alpha1.ModelCache{Spec: v1alpha1.ModelCacheSpec{Model: ref, NodeSelector: map[string]string{"pool": "tpu"}}}
	st = Aggregate(none, Wanted(&none.Spec, nodes), reports)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); st.Ready != "0/0" || c == nil || c.Reason != "NoNodes" {
		t.Errorf("no nodes: %+v", st)
	}
}

// TestAggregateBounded: the node list of a status stops at MaxStatusNodes,
// not-ready nodes first, and says how many it left out.
func TestAggregateBounded(t *testing.T) {
	var nodes []*corev1.Node
	reports := map[string]*nodeIndex{}
	for i := range v1alpha1.MaxStatusNodes + 5 {
		name := fmt.Sprintf("n%04d", i)
		nodes = append(nodes, nodeNamed(name, nil))
		if i != 7 {
			reports[name] = report(v1alpha1.NodeModel{Ref: ref, Revision: "r", Current: true, State: v1alpha1.StateReady})
		}
	}
	st := Aggregate(&v1alpha1.ModelCache{Spec: v1alpha1.ModelCacheSpec{Model: ref}}, nodes, reports)
	if len(st.Nodes) != v1alpha1.MaxStatusNodes || st.NodesOmitted != 5 || st.Nodes[0].Node != "n0007" || st.NodesReady != int32(len(nodes)-1) {
		t.Errorf("%d nodes, %d omitted, first %s, ready %d", len(st.Nodes), st.NodesOmitted, st.Nodes[0].Node, st.NodesReady)
	}
}
