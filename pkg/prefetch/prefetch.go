// Package prefetch is the node agent's Kubernetes controller: it watches
// Deployments and StatefulSets that carry the modelcache.io/prefetch
// annotation, and this node's Node, and keeps the node's cache in step with
// them.
//
//   - A workload whose pod template could run on this node (nodeName,
//     nodeSelector, required node affinity, taints against tolerations) gets
//     its models downloaded here, even at 0 replicas: that is the pre-warmed
//     pool.
//   - Each model a live workload names is pinned for it (holder
//     "workload:deployment/NS/NAME") once ready. Removing the model from the
//     annotation, deleting the workload, or the workload no longer fitting the
//     node drops that pin: the model becomes evictable, nothing is deleted.
//     Pins of other holders (the CSI plugin's "csi:…") are never touched.
//   - A ready model is shown on the Node as the label LabelKey(ref)=ready and
//     in the AnnotationModels annotation, both patched (never updated whole).
//     They stay while the model is held and go when it is evicted; the agent's
//     status is read again every Options.Resync. A workload may require or
//     prefer these labels in its node affinity: Fits ignores them, so the
//     model still comes to cold nodes.
//   - Events on the workload: PrefetchStarted, PrefetchDone (bytes, seconds,
//     node) and PrefetchFailed (reason; also for an annotation that does not
//     parse).
//
// The controller is level-triggered: every change (and every resync) runs
// one reconcile of the whole desired state, so restarts and missed events
// heal themselves.
package prefetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	typedappsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// Event reasons recorded on workloads.
const (
	ReasonStarted = "PrefetchStarted"
	ReasonDone    = "PrefetchDone"
	ReasonFailed  = "PrefetchFailed"
)

// ErrCacheSync is returned by Run when the informers' caches do not sync
// (the API server is unreachable or RBAC forbids a list or watch).
var ErrCacheSync = errors.New("prefetch: informer caches did not sync")

// Agent is what the controller needs of the node agent. It is safe for
// concurrent use and outlives the controller. cmd/cache-agent adapts
// *agent.Agent to it.
type Agent interface {
	// Ensure starts the download of ref or joins the one running (a held
	// model is a hit and returns at once), waiting up to wait (0: not at all)
	// or until ctx ends; the download goes on either way. err is set when the
	// download failed.
	Ensure(ctx context.Context, ref model.Ref, wait time.Duration) (Result, error)
	// Pin keeps ref's revision (ref.Revision, else the current one) from
	// eviction for holder. Pinning twice is a no-op.
	Pin(ref model.Ref, holder string) error
	// Unpin drops holder's pin on ref.Revision (every revision if empty).
	// Unpinning what is not pinned is a no-op.
	Unpin(ref model.Ref, holder string) error
	// Models lists every held revision with its pins.
	Models() []agentapi.ModelStatus
	// AllowedIn says whether a workload of namespace may use the source
	// ref names (the sources file's namespaces lists). Part of the
	// interface, so no agent can skip it.
	AllowedIn(ref model.Ref, namespace string) error
}

// Client is the part of the API the controller uses: apps/v1 for the
// workloads it watches, core/v1 for its Node and events. kubernetes.Interface
// satisfies it; cmd/cache-agent passes the two typed clients alone, because
// the full clientset and its informer factory would more than double the
// agent's cold build (every API group's client, informer and lister).
type Client interface {
	CoreV1() typedcorev1.CoreV1Interface
	AppsV1() typedappsv1.AppsV1Interface
}

// Result is the outcome of an Ensure.
type Result struct {
	Ready        bool
	Hit          bool // held already: nothing was fetched
	Revision     string
	TotalBytes   int64
	FetchedBytes int64 // from S3; the rest was resumed or deduplicated
	Started      time.Time
	Finished     time.Time
}

// Options configure a Controller. NodeName is required.
type Options struct {
	// NodeName is this node's Node object.
	NodeName string
	// Namespace limits the workloads watched; "" watches every namespace.
	Namespace string
	// Resync is how often the controller reconciles without a change, to
	// notice evictions and retry patches (default 30s).
	Resync time.Duration
	// RetryAfter is how long a failed download waits before it is tried
	// again; it doubles per failure up to 10 minutes (default 30s).
	RetryAfter time.Duration
	// SyncTimeout bounds the wait for the informers' first list (default
	// 2m); past it Run returns ErrCacheSync.
	SyncTimeout time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Component names the event source (default "modelcache-agent").
	Component string
	// Resources, when set, is the client for modelcache.io resources: the
	// controller then also fetches the models of the ModelCaches whose
	// placement matches the node, and keeps the node's ModelCacheNode
	// report (see report.go). Nil, or their CRDs not installed: workloads
	// only.
	Resources dynamic.Interface
	// ReportInterval is the least time between two writes of the node's
	// report that differ only in download progress (default 15s). A model
	// becoming ready, failing, starting or going is written at once.
	ReportInterval time.Duration
}

// Controller is the prefetch controller of one node. Create it with New and
// run it with Run; it stops when Run's context ends.
type Controller struct {
	client Client
	agent  Agent
	opts   Options
	log    *slog.Logger

	informers    []toolscache.SharedIndexInformer
	deployments  appslisters.DeploymentLister
	statefulSets appslisters.StatefulSetLister
	nodes        corelisters.NodeLister

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	kick chan struct{}

	mu      sync.Mutex
	desired map[string]*want // by canonical ref: what the last reconcile wanted
	tasks   map[string]*task // by canonical ref
	invalid map[string]bool  // uid + annotation value already reported as invalid
	// refused: the ModelCaches (by holder) whose model this node will not
	// fetch, and why; the node report carries them to their status.
	refused map[string]error

	modelCaches toolscache.SharedIndexInformer // nil without Options.Resources
	reporter    *Reporter                      // nil without Options.Resources
}

// want is one desired model and the workloads that name it.
type want struct {
	ref     model.Ref
	holders map[string]*workload // by holder
}

// workload is a Deployment or StatefulSet with a prefetch annotation.
type workload struct {
	kind      string // "deployment" or "statefulset"
	obj       runtime.Object
	meta      metav1.Object
	template  *corev1.PodTemplateSpec
	annotated string // the prefetch annotation, or a ModelCache's spec.model
	revision  string // a ModelCache's spec.revision
}

func (w *workload) holder() string {
	return HolderPrefix + w.kind + "/" + w.meta.GetNamespace() + "/" + w.meta.GetName()
}

// New returns a controller over client and agent.
func New(client Client, agent Agent, opts Options) (*Controller, error) {
	if client == nil || agent == nil {
		return nil, errors.New("prefetch: New needs a client and an agent")
	}
	if opts.NodeName == "" {
		return nil, errors.New("prefetch: Options.NodeName is required")
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 30 * time.Second
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 2 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Component == "" {
		opts.Component = "modelcache-agent"
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = 15 * time.Second
	}
	c := &Controller{client: client, agent: agent, opts: opts, log: opts.Logger.With("controller", "prefetch", "node", opts.NodeName),
		kick: make(chan struct{}, 1), desired: map[string]*want{}, tasks: map[string]*task{}, invalid: map[string]bool{}}

	ns, apps := opts.Namespace, client.AppsV1()
	deployments := newInformer(&appsv1.Deployment{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			return apps.Deployments(ns).List(ctx, lo)
		},
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			return apps.Deployments(ns).Watch(ctx, lo)
		})
	statefulSets := newInformer(&appsv1.StatefulSet{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			return apps.StatefulSets(ns).List(ctx, lo)
		},
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			return apps.StatefulSets(ns).Watch(ctx, lo)
		})
	// Only this node's Node: a field selector on its name.
	byName := fields.OneTermEqualSelector("metadata.name", opts.NodeName).String()
	nodes := client.CoreV1().Nodes()
	node := newInformer(&corev1.Node{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			lo.FieldSelector = byName
			return nodes.List(ctx, lo)
		},
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			lo.FieldSelector = byName
			return nodes.Watch(ctx, lo)
		})
	c.deployments = appslisters.NewDeploymentLister(deployments.GetIndexer())
	c.statefulSets = appslisters.NewStatefulSetLister(statefulSets.GetIndexer())
	c.nodes = corelisters.NewNodeLister(node.GetIndexer())
	c.informers = []toolscache.SharedIndexInformer{deployments, statefulSets, node}
	if opts.Resources != nil {
		c.modelCaches = modelCacheInformer(opts.Resources, ns)
		c.reporter = NewReporter(opts.Resources, opts.NodeName, opts.ReportInterval, c.log, c.nodeUID, c.nodeReport)
	}

	workloadChanged := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.trigger() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(metav1.Object)
			n, ok2 := cur.(metav1.Object)
			// Spec changes bump the generation; status updates do not matter.
			if !ok1 || !ok2 || o.GetGeneration() != n.GetGeneration() ||
				o.GetAnnotations()[AnnotationPrefetch] != n.GetAnnotations()[AnnotationPrefetch] {
				c.trigger()
			}
		},
		DeleteFunc: func(any) { c.trigger() },
	}
	nodeChanged := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.trigger() },
		UpdateFunc: func(any, any) { c.trigger() },
		DeleteFunc: func(any) { c.trigger() },
	}
	for _, inf := range []toolscache.SharedIndexInformer{deployments, statefulSets} {
		if _, err := inf.AddEventHandler(workloadChanged); err != nil {
			return nil, err
		}
	}
	if _, err := node.AddEventHandler(nodeChanged); err != nil {
		return nil, err
	}
	if c.modelCaches != nil {
		if _, err := c.modelCaches.AddEventHandler(workloadChanged); err != nil {
			return nil, err
		}
	}

	c.broadcaster = record.NewBroadcaster()
	c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: opts.Component, Host: opts.NodeName})
	return c, nil
}

// newInformer is a shared informer over one list/watch pair, indexed by
// namespace as the listers expect, keeping no managed fields.
func newInformer(obj runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) toolscache.SharedIndexInformer {
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn},
		obj, 0, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
	// Only fails once the informer has started; it has not.
	_ = inf.SetTransform(stripManagedFields)
	return inf
}

// stripManagedFields drops what the controller never reads from cached objects.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run starts the informers, waits for their caches and reconciles until ctx
// ends, then returns nil; it returns ErrCacheSync if the caches do not sync
// within Options.SyncTimeout. Downloads it started go on in the agent after
// Run returns.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()
	informers := c.informers
	if c.modelCaches != nil {
		if served, why := c.modelCachesServed(ctx, c.opts.SyncTimeout); served {
			informers = append(informers, c.modelCaches)
		} else {
			c.log.Warn("cannot watch modelcaches.modelcache.io (is the CRD installed, and may the agent list them?): ModelCaches are ignored", "err", why)
			c.modelCaches = nil
		}
	}
	var running sync.WaitGroup
	synced := make([]toolscache.InformerSynced, len(informers))
	for i, inf := range informers {
		synced[i] = inf.HasSynced
		running.Go(func() { inf.RunWithContext(ctx) })
	}
	defer func() {
		cancel() // the informers stop on ctx; wait for them
		running.Wait()
	}()
	syncCtx, syncCancel := context.WithTimeout(ctx, c.opts.SyncTimeout)
	ok := toolscache.WaitForCacheSync(syncCtx.Done(), synced...)
	syncCancel()
	if !ok {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w within %s: can the agent list and watch deployments, statefulsets and its node?", ErrCacheSync, c.opts.SyncTimeout)
	}
	c.log.Info("prefetch controller started", "namespace", c.opts.Namespace, "resync", c.opts.Resync, "modelCaches", c.modelCaches != nil)
	if c.reporter != nil {
		running.Go(func() { c.reporter.Run(ctx) })
	}
	t := time.NewTicker(c.opts.Resync)
	defer t.Stop()
	// An agent that says when its cache changed gets its labels fixed at
	// once after an eviction; otherwise the resync does it.
	var changed <-chan struct{}
	if n, ok := c.agent.(Notifier); ok {
		changed = n.Changed()
	}
	for {
		c.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-changed:
		case <-t.C:
		}
	}
}

// Notifier is an Agent that signals when a model became ready or was
// removed from its cache (*agent.Agent does, through cmd/cache-agent).
type Notifier interface {
	Changed() <-chan struct{}
}

// trigger asks for a reconcile; triggers that arrive during one coalesce.
func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// reconcile brings downloads, pins and the node's labels in line with the
// workloads and the agent's cache.
func (c *Controller) reconcile(ctx context.Context) {
	node, err := c.nodes.Get(c.opts.NodeName)
	if err != nil {
		// Without the Node nothing can be matched; pins stay as they are.
		if apierrors.IsNotFound(err) {
			c.log.Warn("node not found; waiting for it", "err", err)
		} else {
			c.log.Error("read node", "err", err)
		}
		return
	}
	desired := c.desiredState(node)
	models := c.agent.Models()

	c.mu.Lock()
	c.desired = desired
	c.mu.Unlock()

	for key, w := range desired {
		held, rev := heldRevision(models, w.ref)
		c.mu.Lock()
		var t task // a copy: the download's goroutine updates the original
		tp := c.tasks[key]
		if tp != nil {
			t = *tp
		}
		c.mu.Unlock()
		switch {
		case held && !t.running:
			c.pinHolders(w, rev, models, t.res, t.waited)
		case t.running:
			c.joinTask(key, tp, w)
		case tp == nil, t.err == nil:
			// Never tried, or ready once and evicted since (before the pin).
			c.startTask(ctx, key, w.ref)
		case !time.Now().Before(t.retryAt):
			c.startTask(ctx, key, w.ref) // failed; retry
		}
	}
	c.mu.Lock()
	for key, t := range c.tasks {
		if desired[key] == nil && !t.running {
			delete(c.tasks, key) // forget failures of models no longer wanted
		}
	}
	c.mu.Unlock()

	c.unpinStale(desired, models)
	if err := c.syncNode(ctx, node, desired, c.agent.Models()); err != nil {
		c.log.Error("update node labels", "err", err)
	}
	c.kickReport()
}

// kickReport asks for the node report to be looked at again.
func (c *Controller) kickReport() {
	if c.reporter != nil {
		c.reporter.Kick()
	}
}

// desiredState lists annotated workloads that fit node and the models they
// name. Annotations that do not parse are reported once per value.
func (c *Controller) desiredState(node *corev1.Node) map[string]*want {
	var ws []*workload
	deps, err := c.deployments.List(labels.Everything())
	if err != nil {
		c.log.Error("list deployments", "err", err)
	}
	for _, d := range deps {
		if v, ok := d.Annotations[AnnotationPrefetch]; ok {
			ws = append(ws, &workload{kind: "deployment", obj: d, meta: d, template: &d.Spec.Template, annotated: v})
		}
	}
	sts, err := c.statefulSets.List(labels.Everything())
	if err != nil {
		c.log.Error("list statefulsets", "err", err)
	}
	for _, s := range sts {
		if v, ok := s.Annotations[AnnotationPrefetch]; ok {
			ws = append(ws, &workload{kind: "statefulset", obj: s, meta: s, template: &s.Spec.Template, annotated: v})
		}
	}
	mcs, refused := c.modelCacheWorkloads()
	ws = append(ws, mcs...)
	desired := map[string]*want{}
	live := map[string]bool{}
	for _, w := range ws {
		if w.meta.GetDeletionTimestamp() != nil {
			continue
		}
		live[invalidKey(w)] = true
		refs, errs := w.refs()
		// A workload may not make the node fetch with a source kept for
		// other namespaces.
		kept := refs[:0]
		for _, r := range refs {
			if err := c.agent.AllowedIn(r, w.meta.GetNamespace()); err != nil {
				errs = append(errs, err)
				continue
			}
			kept = append(kept, r)
		}
		refs = kept
		switch {
		case len(errs) > 0 && w.kind == kindModelCache:
			refused[w.holder()] = errors.Join(errs...)
		case len(errs) > 0:
			c.reportInvalid(w, errs)
		}
		if ok, why := Fits(&w.template.Spec, node); !ok {
			c.log.Debug("workload does not fit this node", "workload", w.holder(), "reason", why)
			continue
		}
		for _, r := range refs {
			key := r.String()
			if desired[key] == nil {
				desired[key] = &want{ref: r, holders: map[string]*workload{}}
			}
			desired[key].holders[w.holder()] = w
		}
	}
	c.mu.Lock()
	c.refused = refused
	for k := range c.invalid {
		if !live[k] {
			delete(c.invalid, k) // fixed or deleted: report again if it comes back
		}
	}
	c.mu.Unlock()
	return desired
}

func invalidKey(w *workload) string { return string(w.meta.GetUID()) + "\x00" + w.annotated }

func (c *Controller) reportInvalid(w *workload, errs []error) {
	id := invalidKey(w)
	c.mu.Lock()
	seen := c.invalid[id]
	c.invalid[id] = true
	c.mu.Unlock()
	if seen {
		return
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	msg := fmt.Sprintf("invalid %s annotation: %s", AnnotationPrefetch, strings.Join(msgs, "; "))
	c.log.Warn("invalid prefetch annotation", "workload", w.holder(), "err", msg)
	c.event(w.obj, corev1.EventTypeWarning, ReasonFailed, msg)
}
