package modelstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
)

// Options configure Run.
type Options struct {
	// MinWriteInterval is the least time between two status writes of one
	// ModelCache (default 5s): a rollout to 1,000 nodes changes its status
	// every second, and the status need not.
	MinWriteInterval time.Duration
	// Resync recomputes every status though nothing changed (default 5m).
	Resync time.Duration
	Logger *slog.Logger
}

// Controller keeps every ModelCache's status. Create it with New; Run it
// while this replica leads.
type Controller struct {
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	opts  Options
	log   *slog.Logger
	kick  chan struct{}
	mu    sync.Mutex
	index map[string]indexed   // node name → its report, decoded once per resourceVersion
	wrote map[string]time.Time // ModelCache key → last status write
	last  map[string]written   // ModelCache key → last status written
}

// written is a status this controller wrote, as JSON, and the
// resourceVersion the write gave the object: while the informer's copy has
// that version, its status is this one, and need not be decoded again (a
// status of 1,000 nodes is most of a pass's decoding).
type written struct {
	rv, json string
}

type indexed struct {
	rv string
	ix *nodeIndex
}

// New returns a controller; Run starts it.
func New(kube kubernetes.Interface, dyn dynamic.Interface, opts Options) *Controller {
	if opts.MinWriteInterval <= 0 {
		opts.MinWriteInterval = 5 * time.Second
	}
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{kube: kube, dyn: dyn, opts: opts, log: opts.Logger.With("controller", "modelcache-status"),
		kick: make(chan struct{}, 1), index: map[string]indexed{}, wrote: map[string]time.Time{}, last: map[string]written{}}
}

// Served says whether the API server serves both resources (their CRDs are
// installed).
func Served(ctx context.Context, dyn dynamic.Interface) (bool, error) {
	for _, gvr := range []schema.GroupVersionResource{v1alpha1.ModelCaches, v1alpha1.ModelCacheNodes} {
		_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("list %s: %w", gvr.Resource, err)
		}
	}
	return true, nil
}

// Run watches ModelCaches, ModelCacheNodes and Nodes and writes statuses
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	nodesF := informers.NewSharedInformerFactoryWithOptions(c.kube, 0, informers.WithTransform(stripManagedFields))
	dynF := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 0)
	nodes := nodesF.Core().V1().Nodes()
	caches := dynF.ForResource(v1alpha1.ModelCaches)
	reports := dynF.ForResource(v1alpha1.ModelCacheNodes)
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.trigger() },
		UpdateFunc: func(any, any) { c.trigger() },
		DeleteFunc: func(any) { c.trigger() },
	}
	for _, inf := range []toolscache.SharedIndexInformer{nodes.Informer(), caches.Informer(), reports.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	nodesF.Start(ctx.Done())
	dynF.Start(ctx.Done())
	defer nodesF.Shutdown()
	defer dynF.Shutdown()
	for typ, ok := range nodesF.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("modelcache status: %v cache did not sync", typ)
		}
	}
	for gvr, ok := range dynF.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("modelcache status: %s cache did not sync", gvr.Resource)
		}
	}
	c.log.Info("modelcache status controller started")
	resync := time.NewTicker(c.opts.Resync)
	defer resync.Stop()
	// Changes are gathered for a second, then one pass covers them all: the
	// timer is armed by the first change, not pushed back by the next ones
	// (a rollout changes something every few milliseconds).
	gather := time.NewTimer(0)
	defer gather.Stop()
	armed := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			if !armed {
				gather.Reset(time.Second)
				armed = true
			}
			continue
		case <-resync.C:
		case <-gather.C:
			armed = false
		}
		if again := c.pass(ctx, nodes.Lister().List, caches.Lister().List, reports.Lister().List); again > 0 && !armed {
			gather.Reset(again)
			armed = true
		}
	}
}

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

type lister[T any] func(labels.Selector) ([]T, error)

// pass recomputes every ModelCache's status and writes the changed ones;
// it returns when to pass again for writes it held back (0: none).
func (c *Controller) pass(ctx context.Context, listNodes lister[*corev1.Node], listCaches, listReports lister[runtime.Object]) time.Duration {
	nodes, err := listNodes(labels.Everything())
	if err != nil {
		c.log.Error("list nodes", "err", err)
		return 0
	}
	reports := c.reports(listReports)
	objs, err := listCaches(labels.Everything())
	if err != nil {
		c.log.Error("list modelcaches", "err", err)
		return 0
	}
	var again time.Duration
	// ModelCaches of one placement (often all of them: "every GPU node")
	// share one match against the nodes.
	wanted := map[string][]*corev1.Node{}
	seen := map[string]bool{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		seen[u.GetNamespace()+"/"+u.GetName()] = true
		if wait := c.update(ctx, u, nodes, wanted, reports); wait > 0 && (again == 0 || wait < again) {
			again = wait
		}
	}
	for key := range c.last {
		if !seen[key] {
			delete(c.last, key)
			delete(c.wrote, key)
		}
	}
	return again
}

// reports decodes the nodes' reports, each once per resourceVersion.
func (c *Controller) reports(list lister[runtime.Object]) map[string]*nodeIndex {
	objs, err := list(labels.Everything())
	if err != nil {
		c.log.Error("list modelcachenodes", "err", err)
	}
	out := map[string]*nodeIndex{}
	seen := map[string]bool{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		name, rv := u.GetName(), u.GetResourceVersion()
		seen[name] = true
		if cached, ok := c.index[name]; ok && cached.rv == rv {
			out[name] = cached.ix
			continue
		}
		var r v1alpha1.ModelCacheNode
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
			c.log.Warn("node report does not decode", "node", name, "err", err)
			continue
		}
		ix := indexReport(&r.Status)
		c.index[name] = indexed{rv: rv, ix: ix}
		out[name] = ix
	}
	for name := range c.index {
		if !seen[name] {
			delete(c.index, name)
		}
	}
	return out
}

// update writes u's status if it changed and was not written in the last
// MinWriteInterval; else it returns how long to wait.
func (c *Controller) update(ctx context.Context, u *unstructured.Unstructured, nodes []*corev1.Node,
	wanted map[string][]*corev1.Node, reports map[string]*nodeIndex) time.Duration {
	key := u.GetNamespace() + "/" + u.GetName()
	// The spec and the conditions (for their transition times) are decoded;
	// the rest of the status only when this controller did not write it.
	meta := make(map[string]any, len(u.Object))
	for k, v := range u.Object {
		if k != "status" {
			meta[k] = v
		}
	}
	var mc v1alpha1.ModelCache
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(meta, &mc); err != nil {
		c.log.Warn("modelcache does not decode", "modelcache", key, "err", err)
		return 0
	}
	cur, known := c.last[key]
	status, _ := u.Object["status"].(map[string]any)
	if !known || cur.rv != u.GetResourceVersion() {
		var st v1alpha1.ModelCacheStatus
		if status != nil {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(status, &st); err != nil {
				c.log.Warn("modelcache status does not decode; writing it anew", "modelcache", key, "err", err)
			}
		}
		b, _ := json.Marshal(st)
		cur = written{rv: u.GetResourceVersion(), json: string(b)}
		mc.Status = st
	} else if conds, ok := status["conditions"].([]any); ok {
		for _, x := range conds {
			var cond metav1.Condition
			if m, ok := x.(map[string]any); ok && runtime.DefaultUnstructuredConverter.FromUnstructured(m, &cond) == nil {
				mc.Status.Conditions = append(mc.Status.Conditions, cond)
			}
		}
	}
	placement, _ := json.Marshal(mc.Spec.PodSpec())
	w, ok := wanted[string(placement)]
	if !ok {
		w = Wanted(&mc.Spec, nodes)
		wanted[string(placement)] = w
	}
	st := Aggregate(&mc, w, reports)
	next, _ := json.Marshal(st)
	if cur.json == string(next) {
		c.last[key] = cur
		return 0
	}
	if since := time.Since(c.wrote[key]); since < c.opts.MinWriteInterval {
		return c.opts.MinWriteInterval - since
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		c.log.Error("encode status", "modelcache", key, "err", err)
		return 0
	}
	out := &unstructured.Unstructured{Object: meta}
	out.Object["status"] = obj
	c.wrote[key] = time.Now()
	got, err := c.dyn.Resource(v1alpha1.ModelCaches).Namespace(mc.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: "modelcache-controller"})
	if err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			c.log.Error("update modelcache status", "modelcache", key, "err", err)
		}
		return c.opts.MinWriteInterval // the informer brings the newer object
	}
	c.last[key] = written{rv: got.GetResourceVersion(), json: string(next)}
	return 0
}

func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
