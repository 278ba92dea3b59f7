package prefetch

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// heldRevision says whether the cache holds ref: its pinned revision, or
// for a ref without one, the current revision of its location.
func heldRevision(models []agentapi.ModelStatus, ref model.Ref) (bool, string) {
	id := ref.ID()
	for _, m := range models {
		if modelID(m) != id {
			continue
		}
		if (ref.Revision == "" && m.Current) || (ref.Revision != "" && m.Revision == ref.Revision) {
			return true, m.Revision
		}
	}
	return false, ""
}

func modelID(m agentapi.ModelStatus) string {
	r, err := model.ParseRef(m.Ref)
	if err != nil {
		return ""
	}
	return r.ID()
}

func hasPin(models []agentapi.ModelStatus, id, rev, holder string) bool {
	for _, m := range models {
		if m.Revision == rev && modelID(m) == id {
			for _, p := range m.Pins {
				if p == holder {
					return true
				}
			}
		}
	}
	return false
}

// pinHolders pins rev of w.ref for every workload naming it and announces
// each new pin with a PrefetchDone event; res is the model's last download,
// reported to the holders in waited.
func (c *Controller) pinHolders(w *want, rev string, models []agentapi.ModelStatus, res Result, waited map[string]bool) {
	ref := w.ref
	ref.Revision = rev
	for holder, wl := range w.holders {
		if hasPin(models, ref.ID(), rev, holder) {
			continue
		}
		if err := c.agent.Pin(ref, holder); err != nil {
			// Evicted in between: the next resync fetches it again.
			c.log.Error("pin model", "ref", w.ref.String(), "holder", holder, "err", err)
			continue
		}
		c.log.Info("model pinned for workload", "ref", w.ref.String(), "revision", rev, "holder", holder)
		var r Result
		if waited[holder] {
			r = res
		}
		c.event(wl.obj, corev1.EventTypeNormal, ReasonDone, c.doneMessage(w.ref, rev, models, r))
	}
}

// doneMessage describes a ready model: res is its download, if this
// controller ran one.
func (c *Controller) doneMessage(ref model.Ref, rev string, models []agentapi.ModelStatus, res Result) string {
	label := LabelKey(ref) + "=" + LabelReady
	if res.Ready && !res.Hit && res.Revision == rev {
		secs := res.Finished.Sub(res.Started).Seconds()
		return fmt.Sprintf("%s revision %s ready on node %s: %s, %s fetched in %.1fs; node label %s",
			ref, rev, c.opts.NodeName, model.FormatBytes(res.TotalBytes), model.FormatBytes(res.FetchedBytes), secs, label)
	}
	var size int64
	for _, m := range models {
		if m.Revision == rev && modelID(m) == ref.ID() {
			size = m.SizeBytes
		}
	}
	return fmt.Sprintf("%s revision %s ready on node %s: %s already cached, 0 B fetched in 0.0s; node label %s",
		ref, rev, c.opts.NodeName, model.FormatBytes(size), label)
}

// unpinStale drops every workload pin no desired model justifies: the
// workload is gone, no longer names the model, no longer fits the node, or
// named a revision that is no longer the current one.
func (c *Controller) unpinStale(desired map[string]*want, models []agentapi.ModelStatus) {
	for _, m := range models {
		for _, holder := range m.Pins {
			if !c.owns(holder) || justified(desired, m, holder) {
				continue
			}
			ref, err := model.ParseRef(m.Ref)
			if err != nil {
				continue
			}
			ref.Revision = m.Revision
			if err := c.agent.Unpin(ref, holder); err != nil {
				c.log.Error("unpin model", "ref", m.Ref, "revision", m.Revision, "holder", holder, "err", err)
				continue
			}
			c.log.Info("model unpinned for workload", "ref", m.Ref, "revision", m.Revision, "holder", holder)
		}
	}
}

// owns says whether holder is a workload pin this controller manages: any
// workload's, or with Options.Namespace only those of that namespace.
func (c *Controller) owns(holder string) bool {
	rest, ok := strings.CutPrefix(holder, HolderPrefix)
	if !ok {
		return false
	}
	if c.opts.Namespace == "" {
		return true
	}
	parts := strings.SplitN(rest, "/", 3) // kind/namespace/name
	return len(parts) == 3 && parts[1] == c.opts.Namespace
}

func justified(desired map[string]*want, m agentapi.ModelStatus, holder string) bool {
	id := modelID(m)
	for _, w := range desired {
		if w.holders[holder] == nil || w.ref.ID() != id {
			continue
		}
		if w.ref.Revision == m.Revision || (w.ref.Revision == "" && m.Current) {
			return true
		}
	}
	return false
}
