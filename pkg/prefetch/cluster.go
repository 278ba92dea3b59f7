package prefetch

import (
	"context"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// ModelNodes is one model and the nodes whose agents label it ready.
type ModelNodes struct {
	Ref   string   `json:"ref"`
	Label string   `json:"label"`
	Ready []string `json:"readyNodes"`
}

// ClusterView is the cluster's answer to "which nodes hold which model":
// every model some node labels ready (each agent keeps the node's
// AnnotationModels and its labels), with those nodes, from one paged list
// of the Nodes.
type ClusterView struct {
	Nodes  int          `json:"nodes"`
	Models []ModelNodes `json:"models"`
}

// ReadClusterView lists the Nodes (500 a page) and gathers their warm-model
// labels, as each node's agent writes them. A model counts on a node only
// if both the annotation names it and its label is there.
func ReadClusterView(ctx context.Context, nodes typedcorev1.NodeInterface) (ClusterView, error) {
	var v ClusterView
	byRef := map[string]*ModelNodes{}
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := nodes.List(ctx, opts)
		if err != nil {
			return ClusterView{}, fmt.Errorf("list nodes: %w", err)
		}
		for _, n := range list.Items {
			v.Nodes++
			for ref, key := range decodeModels(n.Annotations[AnnotationModels]) {
				if n.Labels[key] != LabelReady {
					continue
				}
				m := byRef[ref]
				if m == nil {
					m = &ModelNodes{Ref: ref, Label: key}
					byRef[ref] = m
				}
				m.Ready = append(m.Ready, n.Name)
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	for _, m := range byRef {
		slices.Sort(m.Ready)
		v.Models = append(v.Models, *m)
	}
	slices.SortFunc(v.Models, func(a, b ModelNodes) int {
		if d := len(b.Ready) - len(a.Ready); d != 0 {
			return d
		}
		if a.Ref < b.Ref {
			return -1
		}
		return 1
	})
	return v, nil
}
