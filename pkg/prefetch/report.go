package prefetch

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

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

// reportState is what the node's ModelCacheNode last said.
type reportState struct {
	last      v1alpha1.ModelCacheNodeStatus
	lastShape string // last's JSON with progress left out
	fetching  bool   // last has downloads in progress
	written   time.Time
	failedAt  time.Time // the last write failed (zero: it did not)
	disabled  bool      // the API server does not serve ModelCacheNodes
}

// runReport keeps the node's ModelCacheNode in step until ctx ends: after
// each reconcile (models ready, evicted, failed, wanted: written at once if
// the report's shape changed), and every ReportInterval while something is
// fetching (progress) or a write failed.
func (c *Controller) runReport(ctx context.Context) {
	t := time.NewTicker(c.opts.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.reportKick:
			c.writeReport(ctx, false)
		case <-t.C:
			c.writeReport(ctx, true)
		}
	}
}

// writeReport writes the node's report if its shape changed, or, on a tick,
// if its progress did.
func (c *Controller) writeReport(ctx context.Context, tick bool) {
	st := &c.report
	if st.disabled {
		return
	}
	if tick && !st.fetching && st.failedAt.IsZero() && !st.written.IsZero() {
		return // nothing moves between reconciles
	}
	cur := c.nodeReport()
	shape := reportShape(cur)
	now := time.Now()
	if !st.written.IsZero() && st.failedAt.IsZero() && shape == st.lastShape {
		if !tick || equalJSON(cur, st.last) || now.Sub(st.written) < c.opts.ReportInterval/2 {
			return // progress only: on the ticks
		}
	}
	if err := c.putReport(ctx, cur); err != nil {
		if ctx.Err() != nil {
			return // stopping
		}
		if apierrors.IsNotFound(err) && isCRDMissing(err) {
			c.log.Warn("the API server does not serve modelcachenodes.modelcache.io (CRD not installed): no node report", "err", err)
			st.disabled = true
			return
		}
		c.log.Error("write node report", "err", err)
		st.failedAt = now
		return
	}
	st.last, st.lastShape, st.written, st.failedAt = cur, shape, now, time.Time{}
	st.fetching = slices.ContainsFunc(cur.Models, func(m v1alpha1.NodeModel) bool { return m.State == v1alpha1.StateFetching })
}

// isCRDMissing tells a 404 for the resource itself from one for the object.
func isCRDMissing(err error) bool {
	var se apierrors.APIStatus
	if s, ok := err.(apierrors.APIStatus); ok {
		se = s
	} else {
		return false
	}
	d := se.Status().Details
	return d == nil || d.Name == ""
}

// putReport patches the node's ModelCacheNode's status, or creates it owned
// by the Node (so it goes when the Node goes).
func (c *Controller) putReport(ctx context.Context, status v1alpha1.ModelCacheNodeStatus) error {
	res := c.opts.Resources.Resource(v1alpha1.ModelCacheNodes)
	// A merge patch replaces lists whole: the report is exactly status.
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = res.Patch(ctx, c.opts.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "modelcache-agent"})
	if !apierrors.IsNotFound(err) || isCRDMissing(err) {
		return err
	}
	node, err := c.nodes.Get(c.opts.NodeName)
	if err != nil {
		return fmt.Errorf("read node for its report's owner: %w", err)
	}
	obj := v1alpha1.ModelCacheNode{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCacheNode},
		ObjectMeta: metav1.ObjectMeta{Name: c.opts.NodeName, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
		Status: status,
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&obj)
	if err != nil {
		return err
	}
	_, err = res.Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{FieldManager: "modelcache-agent"})
	if apierrors.IsAlreadyExists(err) {
		// Created in between (a restart): the next tick patches it.
		return fmt.Errorf("create node report: %w", err)
	}
	return err
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
		return cmp.Or(cmp.Compare(stateOrder(a.State), stateOrder(b.State)), cmp.Compare(a.Ref, b.Ref), cmp.Compare(a.Revision, b.Revision))
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

func stateOrder(s string) int {
	switch s {
	case v1alpha1.StateFailed:
		return 0
	case v1alpha1.StateFetching:
		return 1
	}
	return 2
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
