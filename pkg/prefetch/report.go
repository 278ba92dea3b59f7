package prefetch

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
)

// StatusReporter is an Agent that also says what it is fetching and how
// full its cache is (*agent.Agent does, through cmd/cache-agent). Without
// it the node's report has held models and failed prefetches only.
type StatusReporter interface {
	Status() agentapi.StatusReport
}

// Reporter keeps one node's ModelCacheNode: the report is written at once
// when its shape changes (a model ready, evicted, failed, started), and
// while something is fetching, its progress at most every interval; with
// nothing changing it writes nothing. Writes are merge patches of the
// status (one request), and the object is created on the first, owned by
// the Node so that it goes with it.
type Reporter struct {
	res      dynamic.NamespaceableResourceInterface
	node     string
	owner    func() (types.UID, error)
	report   func() v1alpha1.ModelCacheNodeStatus
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}

	last      v1alpha1.ModelCacheNodeStatus
	lastShape string // last's JSON with progress left out
	fetching  bool   // last has downloads in progress
	written   time.Time
	failedAt  time.Time // the last write failed (zero: it did not)
	disabled  bool      // the API server does not serve ModelCacheNodes
}

// NewReporter returns the reporter of node: report says what the node holds
// now, owner gives its Node's UID. Run it, and Kick it when the report may
// have changed.
func NewReporter(dyn dynamic.Interface, node string, interval time.Duration, log *slog.Logger,
	owner func() (types.UID, error), report func() v1alpha1.ModelCacheNodeStatus) *Reporter {
	return &Reporter{res: dyn.Resource(v1alpha1.ModelCacheNodes), node: node, owner: owner, report: report,
		interval: interval, log: log, kick: make(chan struct{}, 1)}
}

// Kick asks Run to look at the report again.
func (r *Reporter) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// minGap is the least time between two writes of a report: changes that
// come together (two downloads ending, an eviction making room for the next)
// go out in one write.
const minGap = time.Second

// Run writes the report until ctx ends: on each Kick if its shape changed
// (at most every minGap), and every interval while something is fetching or
// a write failed.
func (r *Reporter) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	gap := time.NewTimer(0)
	defer gap.Stop()
	<-gap.C
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			if wait := minGap - time.Since(r.written); wait > 0 {
				if !pending {
					gap.Reset(wait)
					pending = true
				}
				continue
			}
			r.write(ctx, false)
		case <-gap.C:
			pending = false
			r.write(ctx, false)
		case <-t.C:
			r.write(ctx, true)
		}
	}
}

// write writes the report if its shape changed, or, on a tick, if its
// progress did.
func (r *Reporter) write(ctx context.Context, tick bool) {
	if r.disabled {
		return
	}
	if tick && !r.fetching && r.failedAt.IsZero() && !r.written.IsZero() {
		return // nothing moves between kicks
	}
	cur := r.report()
	shape := reportShape(cur)
	now := time.Now()
	if !r.written.IsZero() && r.failedAt.IsZero() && shape == r.lastShape {
		if !tick || equalJSON(cur, r.last) || now.Sub(r.written) < r.interval/2 {
			return // progress only: on the ticks
		}
	}
	if err := r.put(ctx, cur); err != nil {
		if ctx.Err() != nil {
			return // stopping
		}
		if apierrors.IsNotFound(err) && isCRDMissing(err) {
			r.log.Warn("the API server does not serve modelcachenodes.modelcache.io (CRD not installed): no node report", "err", err)
			r.disabled = true
			return
		}
		r.log.Error("write node report", "err", err)
		r.failedAt = now
		return
	}
	r.last, r.lastShape, r.written, r.failedAt = cur, shape, now, time.Time{}
	r.fetching = slices.ContainsFunc(cur.Models, func(m v1alpha1.NodeModel) bool { return m.State == v1alpha1.StateFetching })
}

// isCRDMissing tells a 404 for the resource itself from one for the object.
func isCRDMissing(err error) bool {
	s, ok := err.(apierrors.APIStatus)
	if !ok {
		return false
	}
	d := s.Status().Details
	return d == nil || d.Name == ""
}

// put patches the node's ModelCacheNode's status, or creates it.
func (r *Reporter) put(ctx context.Context, status v1alpha1.ModelCacheNodeStatus) error {
	// A merge patch replaces lists whole: the report is exactly status.
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = r.res.Patch(ctx, r.node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "modelcache-agent"})
	if !apierrors.IsNotFound(err) || isCRDMissing(err) {
		return err
	}
	uid, err := r.owner()
	if err != nil {
		return fmt.Errorf("node report's owner: %w", err)
	}
	obj := v1alpha1.ModelCacheNode{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCacheNode},
		ObjectMeta: metav1.ObjectMeta{Name: r.node, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: r.node, UID: uid}}},
		Status: status,
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&obj)
	if err != nil {
		return err
	}
	_, err = r.res.Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{FieldManager: "modelcache-agent"})
	if apierrors.IsAlreadyExists(err) {
		// Created in between (a restart): the next tick patches it.
		return fmt.Errorf("create node report: %w", err)
	}
	return err
}

// nodeUID is the UID of the controller's Node, the owner of its report.
func (c *Controller) nodeUID() (types.UID, error) {
	n, err := c.nodes.Get(c.opts.NodeName)
	if err != nil {
		return "", err
	}
	return n.UID, nil
}

// nodeReport is what this node holds, fetches, and failed to prefetch.
func (c *Controller) nodeReport() v1alpha1.ModelCacheNodeStatus {
	var st v1alpha1.ModelCacheNodeStatus
	var models []agentapi.ModelStatus
	var jobs []agentapi.Progress
	if r, ok := c.agent.(StatusReporter); ok {
		s := r.Status()
		st.CapacityBytes, st.UsedBytes = s.CapacityBytes, s.UsedBytes
		models, jobs = s.Models, s.Jobs
	} else {
		models = c.agent.Models()
	}
	var out []v1alpha1.NodeModel
	held := map[string]bool{} // location + revision
	for _, m := range models {
		r, err := model.ParseRef(m.Ref)
		if err != nil {
			continue
		}
		loc := r.Location().String()
		held[loc+"\x00"+m.Revision] = true
		out = append(out, v1alpha1.NodeModel{Ref: loc, Revision: m.Revision, Current: m.Current,
			State: v1alpha1.StateReady, Bytes: m.SizeBytes})
	}
	fetching := map[string]bool{}
	for _, j := range jobs {
		if j.State == agentapi.StateReady || j.State == agentapi.StateFailed {
			continue
		}
		r, err := model.ParseRef(j.Ref)
		if err != nil {
			continue
		}
		loc := r.Location().String()
		fetching[loc] = true
		out = append(out, v1alpha1.NodeModel{Ref: loc, Revision: j.Revision, State: v1alpha1.StateFetching,
			Bytes: j.TotalBytes, DoneBytes: j.DoneBytes})
	}
	c.mu.Lock()
	for key, t := range c.tasks {
		if t.running || t.err == nil {
			continue
		}
		r, err := model.ParseRef(key)
		if err != nil {
			continue
		}
		loc := r.Location().String()
		if fetching[loc] || (r.Revision != "" && held[loc+"\x00"+r.Revision]) {
			continue
		}
		out = append(out, v1alpha1.NodeModel{Ref: loc, Revision: r.Revision, State: v1alpha1.StateFailed, Error: truncate(t.err.Error())})
	}
	for holder, err := range c.refused {
		st.Refused = append(st.Refused, v1alpha1.Refusal{ModelCache: holder[len(HolderPrefix+kindModelCache+"/"):], Error: truncate(err.Error())})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b v1alpha1.NodeModel) int {
		return cmp.Or(cmp.Compare(v1alpha1.StateRank(a.State), v1alpha1.StateRank(b.State)), cmp.Compare(a.Ref, b.Ref), cmp.Compare(a.Revision, b.Revision))
	})
	if len(out) > v1alpha1.MaxNodeModels {
		st.ModelsOmitted = int32(len(out) - v1alpha1.MaxNodeModels)
		out = out[:v1alpha1.MaxNodeModels]
	}
	st.Models = out
	slices.SortFunc(st.Refused, func(a, b v1alpha1.Refusal) int { return cmp.Compare(a.ModelCache, b.ModelCache) })
	if len(st.Refused) > v1alpha1.MaxNodeModels {
		st.Refused = st.Refused[:v1alpha1.MaxNodeModels]
	}
	return st
}

// reportShape is the report without what changes as bytes arrive: two
// reports of the same shape differ in progress only.
func reportShape(s v1alpha1.ModelCacheNodeStatus) string {
	s.UsedBytes = 0
	s.Models = slices.Clone(s.Models)
	for i := range s.Models {
		if s.Models[i].State == v1alpha1.StateFetching {
			s.Models[i].DoneBytes = 0
		}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// truncate bounds an error message in the report; a source's error can be
// long (and is the tenant's to make long).
func truncate(s string) string {
	const max = 512
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}
