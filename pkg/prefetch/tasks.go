package prefetch

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/modelcache/modelcache/pkg/model"
)

// task is the download of one desired model.
type task struct {
	running bool
	err     error
	res     Result
	// backoff gives the wait after each failure in a row; a success
	// starts it over.
	backoff wait.Backoff
	retryAt time.Time
	// waited lists the holders that named the model while this task's
	// download ran. Their PrefetchDone reports the download; a workload that
	// names the model later is told it was already cached, not that a
	// download it never waited for was done for it.
	waited map[string]bool
	// started: PrefetchStarted went out for this download, so a holder that
	// joins while it runs gets one too.
	started bool
}

// retryBackoff is the wait before a failed download is tried again:
// RetryAfter, doubling per failure in a row up to 1024 times RetryAfter or
// 10 minutes, whichever is less (past its Steps, Step keeps returning the
// last wait).
func (c *Controller) retryBackoff() wait.Backoff {
	return wait.Backoff{Duration: c.opts.RetryAfter, Factor: 2, Steps: 10, Cap: 10 * time.Minute}
}

// startTask downloads ref in the background; the reconcile after it pins.
func (c *Controller) startTask(ctx context.Context, key string, ref model.Ref) {
	c.mu.Lock()
	t := c.tasks[key]
	if t == nil {
		t = &task{backoff: c.retryBackoff()}
		c.tasks[key] = t
	}
	t.running, t.started = true, false
	t.waited = map[string]bool{}
	if w := c.desired[key]; w != nil {
		for h := range w.holders {
			t.waited[h] = true
		}
	}
	c.mu.Unlock()
	go func() {
		res, err := c.agent.Ensure(ctx, ref, 0)
		if err == nil && !res.Ready {
			c.log.Info("prefetch started", "ref", key)
			c.kickReport() // the report says it is fetching
			// Holders are marked under the lock that joinTask takes too, so
			// each one gets exactly one PrefetchStarted.
			c.mu.Lock()
			t.started = true
			var objs []runtime.Object
			if w := c.desired[key]; w != nil {
				for h, wl := range w.holders {
					t.waited[h] = true
					objs = append(objs, wl.obj)
				}
			}
			c.mu.Unlock()
			for _, o := range objs {
				c.event(o, corev1.EventTypeNormal, ReasonStarted, c.startedMessage(key))
			}
			// Wait as long as it takes; ctx ends it when the controller stops.
			res, err = c.agent.Ensure(ctx, ref, 365*24*time.Hour)
		}
		c.mu.Lock()
		t.running = false
		switch {
		case err != nil:
			t.err = err
			t.retryAt = time.Now().Add(t.backoff.Step())
		case res.Ready:
			t.err, t.res, t.backoff = nil, res, c.retryBackoff()
		default: // the controller is stopping
		}
		c.mu.Unlock()
		if err != nil {
			c.log.Error("prefetch failed", "ref", key, "err", err)
			c.eventToHolders(key, corev1.EventTypeWarning, ReasonFailed,
				fmt.Sprintf("%s on node %s: %v", key, c.opts.NodeName, err))
		}
		c.trigger()
	}()
}

// joinTask records the holders of w that came while its download runs, and
// tells them it started if it did.
func (c *Controller) joinTask(key string, t *task, w *want) {
	var objs []runtime.Object
	c.mu.Lock()
	for h, wl := range w.holders {
		if t.waited[h] {
			continue
		}
		t.waited[h] = true
		if t.started {
			objs = append(objs, wl.obj)
		}
	}
	c.mu.Unlock()
	for _, o := range objs {
		c.event(o, corev1.EventTypeNormal, ReasonStarted, c.startedMessage(key))
	}
}

func (c *Controller) startedMessage(key string) string {
	return fmt.Sprintf("fetching %s on node %s", key, c.opts.NodeName)
}

// eventToHolders records an event on every workload that currently names key.
func (c *Controller) eventToHolders(key, typ, reason, msg string) {
	c.mu.Lock()
	var objs []runtime.Object
	if w := c.desired[key]; w != nil {
		for _, wl := range w.holders {
			objs = append(objs, wl.obj)
		}
	}
	c.mu.Unlock()
	for _, o := range objs {
		c.event(o, typ, reason, msg)
	}
}

// event records an event on obj; ModelCaches (obj nil) get none: their
// status says it, and a thousand nodes' events on one object would be noise.
func (c *Controller) event(obj runtime.Object, typ, reason, msg string) {
	if obj != nil {
		c.recorder.Event(obj, typ, reason, msg)
	}
}
