package modelstatus

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
)

// Sizes knows how big each model is from the nodes' reports: the largest
// ready revision any node holds of a ref's location. The pod webhook
// weighs its preferred terms by it. It keeps only (location, size) per node,
// not the reports.
type Sizes struct {
	mu     sync.RWMutex
	byNode map[string]map[string]int64 // node → ref.ID() → bytes
}

// NewSizes starts watching ModelCacheNodes until ctx ends; ModelSize knows
// nothing until the first list is in.
func NewSizes(ctx context.Context, dyn dynamic.Interface) (*Sizes, error) {
	s := &Sizes{byNode: map[string]map[string]int64{}}
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	inf := f.ForResource(v1alpha1.ModelCacheNodes).Informer()
	// The cache keeps the sizes alone, not whole reports.
	if err := inf.SetTransform(func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		return &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{
			"name": u.GetName(), "resourceVersion": u.GetResourceVersion()}, "sizes": readySizes(u)}}, nil
	}); err != nil {
		return nil, err
	}
	set := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			sizes := map[string]int64{}
			m, _ := u.Object["sizes"].(map[string]any)
			for k, v := range m {
				sizes[k], _ = v.(int64)
			}
			s.mu.Lock()
			s.byNode[u.GetName()] = sizes
			s.mu.Unlock()
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, cur any) { set(cur) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				s.mu.Lock()
				delete(s.byNode, u.GetName())
				s.mu.Unlock()
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("model sizes: %w", err)
	}
	f.Start(ctx.Done())
	return s, nil
}

// readySizes is a report's ready revisions' sizes by ref.ID() (int64
// values in a map[string]any: JSON-like, as an Unstructured must hold).
func readySizes(u *unstructured.Unstructured) map[string]any {
	var r v1alpha1.ModelCacheNode
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
		return nil
	}
	out := map[string]any{}
	for _, m := range r.Status.Models {
		if m.State != v1alpha1.StateReady {
			continue
		}
		if ref, err := model.ParseRef(m.Ref); err == nil {
			cur, _ := out[ref.ID()].(int64)
			out[ref.ID()] = max(cur, m.Bytes)
		}
	}
	return out
}

// ModelSize is the largest ready revision of ref's location on any node.
func (s *Sizes) ModelSize(ref model.Ref) (int64, bool) {
	id := ref.ID()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var n int64
	var ok bool
	for _, sizes := range s.byNode {
		if v, has := sizes[id]; has {
			n, ok = max(n, v), true
		}
	}
	return n, ok
}
