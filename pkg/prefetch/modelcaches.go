package prefetch

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
)

// kindModelCache is the kind in a ModelCache's holder:
// "workload:modelcache/NAMESPACE/NAME".
const kindModelCache = "modelcache"

// modelCacheInformer watches the ModelCaches of namespace ("" every one).
func modelCacheInformer(dyn dynamic.Interface, namespace string) toolscache.SharedIndexInformer {
	res := dyn.Resource(v1alpha1.ModelCaches).Namespace(namespace)
	return newInformer(&unstructured.Unstructured{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) { return res.List(ctx, lo) },
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) { return res.Watch(ctx, lo) })
}

// modelCachesServed says whether the agent can watch ModelCaches: their CRD
// is installed and RBAC lets it. Without them the controller goes on with
// workloads alone rather than never syncing. Other errors are retried
// until timeout.
func (c *Controller) modelCachesServed(ctx context.Context, timeout time.Duration) (served bool, why error) {
	res := c.opts.Resources.Resource(v1alpha1.ModelCaches).Namespace(c.opts.Namespace)
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := res.List(ctx, metav1.ListOptions{Limit: 1})
		switch {
		case err == nil:
			served, why = true, nil
		case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
			served, why = false, err
		default:
			c.log.Warn("list modelcaches; trying again", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return false, fmt.Errorf("list modelcaches: %w", err)
	}
	return served, why
}

// modelCacheWorkloads turns the cached ModelCaches into workloads: each
// names one model (spec.model at spec.revision) for the nodes its
// placement matches. A spec that does not decode is refused like a bad ref.
func (c *Controller) modelCacheWorkloads() (ws []*workload, refused map[string]error) {
	refused = map[string]error{}
	if c.modelCaches == nil {
		return nil, refused
	}
	for _, obj := range c.modelCaches.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var mc v1alpha1.ModelCache
		w := &workload{kind: kindModelCache, meta: u}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mc); err != nil {
			refused[w.holder()] = fmt.Errorf("%w: spec: %v", model.ErrInvalidRef, err)
			continue
		}
		w.template = &corev1.PodTemplateSpec{Spec: *mc.Spec.PodSpec()}
		w.annotated, w.revision = strings.TrimSpace(mc.Spec.Model), strings.TrimSpace(mc.Spec.Revision)
		ws = append(ws, w)
	}
	return ws, refused
}

// refs are the models w names: a ModelCache names one (at its revision), a
// Deployment or StatefulSet those of its annotation.
func (w *workload) refs() ([]model.Ref, []error) {
	if w.kind != kindModelCache {
		return ParseAnnotation(w.annotated)
	}
	r, err := model.ParseRef(w.annotated)
	if err != nil {
		return nil, []error{err}
	}
	if w.revision != "" {
		r.Revision = w.revision
		// Parsed again, so a revision gets the checks one in a ref gets.
		if r, err = model.ParseRef(r.String()); err != nil {
			return nil, []error{fmt.Errorf("spec.revision: %w", err)}
		}
	}
	return []model.Ref{r}, nil
}
