package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
)

// Verify re-hashes every blob at full speed (an operator asked), quarantines
// corrupt ones and repairs the pinned revisions that linked them.
func (a *Agent) Verify(ctx context.Context) (agentapi.VerifyReport, error) {
	rep, err := a.verify(ctx)
	return wireVerifyReport(rep), err
}

func (a *Agent) verify(ctx context.Context, opts ...cache.VerifyOption) (cache.VerifyReport, error) {
	rep, err := a.store.Verify(ctx, opts...)
	for i := range rep.Corrupt {
		a.metrics.corrupt.Inc()
		a.repair(ctx, &rep.Corrupt[i])
	}
	return rep, err
}

// repair fetches a quarantined blob again and swaps it into the revisions
// that are pinned (mounted by pods, or wanted by a workload), which Verify
// could not evict. Unpinned revisions were evicted and come back on the next
// ensure like any other miss.
func (a *Agent) repair(ctx context.Context, cb *cache.CorruptBlob) {
	if len(cb.Pinned) == 0 {
		return
	}
	fail := func(err error) {
		cb.RepairError = err.Error()
		a.log.Error("repair of a corrupt blob failed; pinned revisions still link it",
			"digest", cb.Digest, "pinned", cb.Pinned, "err", err)
	}
	ref, m, err := a.store.BlobSource(cb.Digest)
	if err != nil {
		fail(err)
		return
	}
	res, err := a.store.Reserve(m.Size())
	if err != nil {
		fail(err)
		return
	}
	defer res.Release()
	if _, _, err := a.fetcher.Fetch(ctx, ref.Location(), nil, m, res, nil); err != nil {
		fail(fmt.Errorf("fetch %s from %s: %w", m.Files[0].Path, ref.Location(), err))
		return
	}
	done, err := a.store.Relink(cb.Digest)
	cb.Repaired = done
	if err != nil {
		fail(err)
		return
	}
	a.metrics.repaired.Inc()
	a.log.Warn("corrupt blob fetched again and swapped in", "digest", cb.Digest, "revisions", done)
}

// Scrub re-hashes the whole cache every interval, reading at most
// bytesPerSecond, and repairs what it finds (see Verify), until ctx ends.
// Bit rot on a node's disk is otherwise found only by the model it breaks.
func (a *Agent) Scrub(ctx context.Context, interval time.Duration, bytesPerSecond int64) {
	if interval <= 0 {
		return
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rep, err := a.verify(ctx, cache.WithRate(bytesPerSecond))
		a.metrics.scrubs.Inc()
		if err != nil && ctx.Err() == nil {
			a.log.Error("scrub", "err", err)
		} else if err == nil {
			a.metrics.lastScrub.SetToCurrentTime()
			a.log.Info("scrub done", "blobs", rep.Blobs, "bytes", rep.Bytes, "corrupt", len(rep.Corrupt),
				"seconds", time.Since(start).Seconds())
		}
		t.Reset(interval)
	}
}
