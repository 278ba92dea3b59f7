// Package v1alpha1 is modelcache's API group modelcache.io/v1alpha1: the
// ModelCache resource (a model a pool of nodes should hold, and how far
// they are) and ModelCacheNode (what one node's agent reports it holds).
//
// The types are plain structs read and written through client-go's dynamic
// client and the unstructured converter: no generated clientset, informers
// or deep-copy functions, which would more than double the agent's cold
// build for two small types. The CRDs in deploy/crds are written by hand
// and checked against these types by TestCRDsMatchTypes.
package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of the API.
const (
	Group   = "modelcache.io"
	Version = "v1alpha1"
)

// The resources.
var (
	ModelCaches     = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "modelcaches"}
	ModelCacheNodes = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "modelcachenodes"}
)

// Kinds.
const (
	KindModelCache     = "ModelCache"
	KindModelCacheNode = "ModelCacheNode"
)

// ModelCache asks every node that matches its placement to hold a model,
// with no Deployment needed, and pins it there like a workload does. Its
// status, kept by modelcache-controller, says how many of those nodes hold
// it, at which revision, and how far the others are.
type ModelCache struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModelCacheSpec   `json:"spec"`
	Status ModelCacheStatus `json:"status,omitempty"`
}

// ModelCacheSpec is what to hold and where.
type ModelCacheSpec struct {
	// Model is a ref with its options, as in a volume or prefetch
	// annotation: "s3://bucket/llama-3-8b?source=minio".
	Model string `json:"model"`
	// Revision pins one revision (the digest `cache-agent status` shows);
	// empty follows the source.
	Revision string `json:"revision,omitempty"`
	// NodeSelector, NodeAffinity and Tolerations choose the nodes, matched
	// as the scheduler matches a pod with them. None: every node.
	NodeSelector map[string]string    `json:"nodeSelector,omitempty"`
	NodeAffinity *corev1.NodeSelector `json:"nodeAffinity,omitempty"`
	Tolerations  []corev1.Toleration  `json:"tolerations,omitempty"`
}

// PodSpec is the placement of spec as a pod's, for prefetch.Fits.
func (s *ModelCacheSpec) PodSpec() *corev1.PodSpec {
	p := &corev1.PodSpec{NodeSelector: s.NodeSelector, Tolerations: s.Tolerations}
	if s.NodeAffinity != nil {
		p.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: s.NodeAffinity}}
	}
	return p
}

// ModelCacheStatus is the cluster's answer for one ModelCache.
type ModelCacheStatus struct {
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// NodesWanted match the placement; NodesReady of them hold the model.
	NodesWanted int32 `json:"nodesWanted"`
	NodesReady  int32 `json:"nodesReady"`
	// Ready is "NodesReady/NodesWanted", for kubectl's READY column.
	Ready string `json:"ready"`
	// Revision is spec.revision, else the revision most ready nodes hold.
	Revision string `json:"revision,omitempty"`
	// SizeBytes of that revision.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// Size is SizeBytes for people ("15.0 GiB").
	Size string `json:"size,omitempty"`
	// Nodes is one entry per wanted node, not-ready ones first, at most
	// MaxStatusNodes; NodesOmitted counts the rest.
	Nodes        []NodeState        `json:"nodes,omitempty"`
	NodesOmitted int32              `json:"nodesOmitted,omitempty"`
	Conditions   []metav1.Condition `json:"conditions,omitempty"`
}

// MaxStatusNodes bounds ModelCacheStatus.Nodes, so a status stays a few
// hundred kilobytes on any cluster.
const MaxStatusNodes = 1000

// Per-node states.
const (
	StateReady    = "Ready"
	StateFetching = "Fetching"
	StateFailed   = "Failed"
	// StatePending: the node should hold the model and reports nothing of
	// it yet.
	StatePending = "Pending"
)

// StateRank orders states for lists that show what needs attention first:
// Failed, Fetching, Pending, then Ready.
func StateRank(s string) int {
	switch s {
	case StateFailed:
		return 0
	case StateFetching:
		return 1
	case StatePending:
		return 2
	}
	return 3
}

// NodeState is one node's state of one model.
type NodeState struct {
	Node     string `json:"node"`
	State    string `json:"state"`
	Revision string `json:"revision,omitempty"`
	// Bytes held (Ready) or to fetch in all (Fetching); DoneBytes so far.
	Bytes     int64  `json:"bytes,omitempty"`
	DoneBytes int64  `json:"doneBytes,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Condition types of a ModelCache.
const (
	ConditionReady       = "Ready"       // every wanted node holds it
	ConditionProgressing = "Progressing" // some node is fetching it
	ConditionDegraded    = "Degraded"    // some node failed, or the spec is invalid
)

// ModelCacheNode is what one node's agent holds and fetches, written by that
// agent only, named after its Node (which owns it, so it goes with the
// Node). One small object per node, changed only when a model's state
// changes (and for progress at most every report interval), so that
// aggregating 1,000 nodes costs no hot object.
type ModelCacheNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status ModelCacheNodeStatus `json:"status,omitempty"`
}

// ModelCacheNodeStatus is a node's report.
type ModelCacheNodeStatus struct {
	CapacityBytes int64 `json:"capacityBytes,omitempty"`
	UsedBytes     int64 `json:"usedBytes,omitempty"`
	// Models, failed and fetching first, at most MaxNodeModels;
	// ModelsOmitted counts the rest.
	Models        []NodeModel `json:"models,omitempty"`
	ModelsOmitted int32       `json:"modelsOmitted,omitempty"`
	// Refused lists the ModelCaches whose model this node will not fetch:
	// a spec that does not parse, or a source their namespace may not use.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is a ModelCache ("NAMESPACE/NAME") a node refuses, and why.
type Refusal struct {
	ModelCache string `json:"modelCache"`
	Error      string `json:"error"`
}

// MaxNodeModels bounds a ModelCacheNode's list: a node of many tiny models
// still writes an object of bounded size.
const MaxNodeModels = 1000

// NodeModel is one model on a node: a held revision, a download, or a
// prefetch that failed.
type NodeModel struct {
	// Ref is canonical and without its revision.
	Ref      string `json:"ref"`
	Revision string `json:"revision,omitempty"`
	// Current: the revision the ref resolves to now (held revisions only).
	Current   bool   `json:"current,omitempty"`
	State     string `json:"state"`
	Bytes     int64  `json:"bytes,omitempty"`
	DoneBytes int64  `json:"doneBytes,omitempty"`
	Error     string `json:"error,omitempty"`
}
