// Package modelstatus keeps the status of every ModelCache: it adds up the
// nodes' reports (ModelCacheNode, one per node, written by its agent) for
// the nodes each ModelCache's placement matches, so `kubectl get
// modelcaches` says how many nodes hold the model, at which revision, and
// how far the others are. It runs in modelcache-controller, one leader at a
// time.
package modelstatus

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// nodeIndex is one node's report, its models by ref.ID().
type nodeIndex struct {
	byID    map[string][]v1alpha1.NodeModel
	refused map[string]string // "NAMESPACE/NAME" → error
}

func indexReport(s *v1alpha1.ModelCacheNodeStatus) *nodeIndex {
	ix := &nodeIndex{byID: map[string][]v1alpha1.NodeModel{}, refused: map[string]string{}}
	for _, m := range s.Models {
		r, err := model.ParseRef(m.Ref)
		if err != nil {
			continue
		}
		ix.byID[r.ID()] = append(ix.byID[r.ID()], m)
	}
	for _, r := range s.Refused {
		ix.refused[r.ModelCache] = r.Error
	}
	return ix
}

// Wanted are the nodes spec's placement matches, by the rules the agents
// use (prefetch.Fits).
func Wanted(spec *v1alpha1.ModelCacheSpec, nodes []*corev1.Node) []*corev1.Node {
	ps := spec.PodSpec()
	var out []*corev1.Node
	for _, n := range nodes {
		if ok, _ := prefetch.Fits(ps, n); ok {
			out = append(out, n)
		}
	}
	return out
}

// Aggregate computes mc's status from the nodes it wants (Wanted) and their
// reports (by node name; a node without one has reported nothing yet).
// Conditions keep their transition times from mc's current status when they
// do not change.
func Aggregate(mc *v1alpha1.ModelCache, wanted []*corev1.Node, reports map[string]*nodeIndex) v1alpha1.ModelCacheStatus {
	st := v1alpha1.ModelCacheStatus{ObservedGeneration: mc.Generation,
		Conditions: slices.Clone(mc.Status.Conditions)}
	ref, refErr := parseSpec(&mc.Spec)
	id, holder := ref.ID(), mc.Namespace+"/"+mc.Name // once, not per node
	revisions := map[string]int{}
	sizes := map[string]int64{}
	var states []v1alpha1.NodeState
	var fetching, failed int
	var firstErr string
	for _, n := range wanted {
		st.NodesWanted++
		ns := v1alpha1.NodeState{Node: n.Name, State: v1alpha1.StatePending}
		if refErr == nil {
			ns = nodeState(n.Name, ref, id, holder, reports[n.Name])
		}
		switch ns.State {
		case v1alpha1.StateReady:
			st.NodesReady++
			revisions[ns.Revision]++
			sizes[ns.Revision] = ns.Bytes
		case v1alpha1.StateFetching:
			fetching++
		case v1alpha1.StateFailed:
			failed++
			if firstErr == "" {
				firstErr = n.Name + ": " + ns.Error
			}
		}
		states = append(states, ns)
	}
	st.Ready = fmt.Sprintf("%d/%d", st.NodesReady, st.NodesWanted)
	st.Revision = mc.Spec.Revision
	if st.Revision == "" {
		best := 0
		for rev, n := range revisions {
			if n > best || (n == best && rev < st.Revision) {
				st.Revision, best = rev, n
			}
		}
	}
	if size, ok := sizes[st.Revision]; ok {
		st.SizeBytes, st.Size = size, model.FormatBytes(size)
	}
	slices.SortFunc(states, func(a, b v1alpha1.NodeState) int {
		return cmp.Or(cmp.Compare(v1alpha1.StateRank(a.State), v1alpha1.StateRank(b.State)), cmp.Compare(a.Node, b.Node))
	})
	if len(states) > v1alpha1.MaxStatusNodes {
		st.NodesOmitted = int32(len(states) - v1alpha1.MaxStatusNodes)
		states = states[:v1alpha1.MaxStatusNodes]
	}
	st.Nodes = states
	setConditions(&st, mc.Generation, refErr, fetching, failed, firstErr)
	return st
}

// parseSpec is the ref spec names, at spec.revision.
func parseSpec(s *v1alpha1.ModelCacheSpec) (model.Ref, error) {
	r, err := model.ParseRef(s.Model)
	if err != nil {
		return model.Ref{}, fmt.Errorf("spec.model: %w", err)
	}
	if s.Revision != "" {
		r.Revision = s.Revision
		if r, err = model.ParseRef(r.String()); err != nil {
			return model.Ref{}, fmt.Errorf("spec.revision: %w", err)
		}
	}
	return r, nil
}

// nodeState is the state of ref on one node: ready beats fetching beats
// failed beats pending, because a node may hold one revision while it
// fetches the next.
func nodeState(node string, ref model.Ref, id, holder string, ix *nodeIndex) v1alpha1.NodeState {
	ns := v1alpha1.NodeState{Node: node, State: v1alpha1.StatePending}
	if ix == nil {
		return ns
	}
	if why, ok := ix.refused[holder]; ok {
		ns.State, ns.Error = v1alpha1.StateFailed, why
		return ns
	}
	best := 99
	for _, m := range ix.byID[id] {
		var rank int
		switch {
		case m.State == v1alpha1.StateReady && ((ref.Revision == "" && m.Current) || (ref.Revision != "" && m.Revision == ref.Revision)):
			rank = 0
		case m.State == v1alpha1.StateFetching && (ref.Revision == "" || m.Revision == "" || m.Revision == ref.Revision):
			rank = 1
		case m.State == v1alpha1.StateFailed && (m.Revision == "" || m.Revision == ref.Revision):
			rank = 2
		default:
			continue // another revision
		}
		if rank < best {
			best = rank
			ns = v1alpha1.NodeState{Node: node, State: m.State, Revision: m.Revision, Bytes: m.Bytes, DoneBytes: m.DoneBytes, Error: m.Error}
		}
	}
	return ns
}

func setConditions(st *v1alpha1.ModelCacheStatus, gen int64, refErr error, fetching, failed int, firstErr string) {
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case refErr != nil:
		set(v1alpha1.ConditionReady, false, "InvalidSpec", refErr.Error())
	case st.NodesWanted == 0:
		set(v1alpha1.ConditionReady, false, "NoNodes", "no node matches nodeSelector, nodeAffinity and tolerations")
	case st.NodesReady == st.NodesWanted:
		set(v1alpha1.ConditionReady, true, "AllNodesReady", fmt.Sprintf("%d of %d nodes hold the model", st.NodesReady, st.NodesWanted))
	default:
		set(v1alpha1.ConditionReady, false, "NodesNotReady", fmt.Sprintf("%d of %d nodes hold the model", st.NodesReady, st.NodesWanted))
	}
	if fetching > 0 {
		set(v1alpha1.ConditionProgressing, true, "Fetching", fmt.Sprintf("%d nodes fetching", fetching))
	} else {
		set(v1alpha1.ConditionProgressing, false, "Idle", "no node is fetching")
	}
	switch {
	case refErr != nil:
		set(v1alpha1.ConditionDegraded, true, "InvalidSpec", refErr.Error())
	case failed > 0:
		set(v1alpha1.ConditionDegraded, true, "FetchFailed", fmt.Sprintf("%d nodes failed; %s", failed, firstErr))
	default:
		set(v1alpha1.ConditionDegraded, false, "NoFailures", "no node failed")
	}
}
