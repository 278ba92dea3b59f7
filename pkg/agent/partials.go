package agent

import (
	"context"
	"time"
)

// ExpirePartials drops partial downloads nobody resumed for maxAge (see
// cache.Store.DropStaleIngests): once now, since a restart is when most are
// left behind, then every maxAge/4 (at most hourly) until ctx ends. A resume
// saves bytes; a partial download nobody resumes only holds disk that the
// capacity does not count.
func (a *Agent) ExpirePartials(ctx context.Context, maxAge time.Duration) {
	if maxAge <= 0 {
		return
	}
	every := min(maxAge/4, time.Hour)
	for {
		dropped, err := a.store.DropStaleIngests(maxAge)
		if err != nil {
			a.log.Warn("drop stale partial downloads", "err", err)
		}
		a.metrics.partialsDropped.Add(float64(dropped.Count))
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
