package csi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// Reconcile makes the agent's pins match the mounts: every volume still
// mounted holds its pin (re-pinned if the agent lost it), every record whose
// mount is gone drops its pin, and a csi: pin with no record is dropped. It
// runs at start-up, after the agent comes back, and periodically.
func (d *Driver) Reconcile(ctx context.Context) error {
	if !d.opts.Node {
		return nil
	}
	// Status first, records second: a publish writes its record before it
	// pins, so any csi: pin in this status has its record on disk by the
	// time we list them, and is never mistaken for a leak.
	st, err := d.opts.Agent.Status(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	recs, bad, err := d.recs.list()
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for name, err := range bad {
		d.log.Error("reconcile: skipping unreadable volume record", "file", name, "err", err)
	}
	var errs []error
	held := map[string]bool{}
	for _, rec := range recs {
		held[rec.Holder] = true
		if !d.lock(rec.VolumeID) {
			continue // a publish or unpublish is at work on it
		}
		if err := d.reconcileOne(ctx, rec); err != nil {
			errs = append(errs, err)
		}
		d.unlock(rec.VolumeID)
	}
	for _, m := range st.Models {
		for _, h := range m.Pins {
			if !isCSIHolder(h) || held[h] {
				continue
			}
			ref, err := model.ParseRef(m.Ref)
			if err != nil {
				continue
			}
			ref.Revision = m.Revision
			if err := d.opts.Agent.Unpin(ctx, ref.String(), h); err != nil {
				errs = append(errs, fmt.Errorf("drop stale pin %s on %s: %w", h, ref, err))
				continue
			}
			d.log.Info("reconcile: dropped a pin no mounted volume holds", "model", ref.String(), "holder", h)
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) reconcileOne(ctx context.Context, rec record) error {
	mounted, err := d.opts.Mounter.IsMounted(rec.Target)
	if err != nil {
		return err
	}
	if mounted {
		if _, err := d.opts.Agent.Pin(ctx, rec.Ref, rec.Holder); err != nil {
			// Not fatal to the pod, which reads its mount, but the model is
			// now evictable under it: say so loudly.
			return fmt.Errorf("re-pin %s for mounted volume %s: %w", rec.Ref, rec.VolumeID, err)
		}
		return nil
	}
	if err := d.opts.Agent.Unpin(ctx, rec.Ref, rec.Holder); err != nil {
		return fmt.Errorf("unpin %s of unmounted volume %s: %w", rec.Ref, rec.VolumeID, err)
	}
	d.log.Info("reconcile: dropped the pin of a volume no longer mounted", "volume", rec.VolumeID, "model", rec.Ref)
	return d.recs.remove(rec.VolumeID, rec.Target)
}

// Run reconciles every interval until ctx ends, and every few seconds while
// the agent is unreachable, so pins are restored soon after it restarts.
func (d *Driver) Run(ctx context.Context, interval time.Duration) {
	if !d.opts.Node {
		return
	}
	const retry = 2 * time.Second
	next := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
		err := d.Reconcile(ctx)
		switch {
		case err == nil:
			next = interval
		case errors.Is(err, agentapi.ErrUnavailable):
			d.log.Debug("reconcile: agent not answering yet", "err", err)
			next = retry
		default:
			d.log.Error("reconcile", "err", err)
			next = interval
		}
	}
}
