// Package agent wires the content store and the fetcher into the node agent:
// one download per model however many callers ask, pins, metrics, and the
// server of the unix-socket API the CLI and the CSI plugin use. The API's
// types, error classes and Go client are pkg/agentapi, which links neither.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	k8scache "k8s.io/apimachinery/pkg/util/cache"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// Fetcher lists and downloads models, and answers who may read them.
// *fetch.Fetcher implements it. The access checks are part of it, not an
// optional extra: an agent whose fetcher could not check would serve every
// tenant.
type Fetcher interface {
	// List and Fetch use creds, a volume's keys, when not nil, and the
	// source's own credentials otherwise.
	List(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error)
	Fetch(ctx context.Context, ref model.Ref, creds *model.Credentials, m *model.Manifest, store fetch.Store, progress fetch.Progress) (*model.Manifest, fetch.Stats, error)
	// AllowedIn says whether namespace may use the source ref names.
	AllowedIn(ref model.Ref, namespace string) error
	// CheckAccess asks the source whether creds may read every object of
	// the model.
	CheckAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error
}

// Agent is the node agent. Create it with New, stop it with Close.
type Agent struct {
	store   *cache.Store
	fetcher Fetcher
	log     *slog.Logger
	metrics *metrics

	ctx    context.Context // downloads outlive the request that started them
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job // by ref string: one download per model

	// slots bounds the downloads that run at once, and with them the
	// fetcher's workers and buffers: any tenant can ask for models.
	slots chan struct{}

	access *k8scache.LRUExpireCache // S3's answers about volumes' keys (see access.go)
}

// DefaultMaxDownloads is how many models download at once by default.
// They share the fetcher's ranged GETs (16 × 256 KiB of buffers in all);
// more at once would only share the same GETs, link and disk.
const DefaultMaxDownloads = 4

// Option configures an Agent.
type Option func(*Agent)

// WithMaxDownloads bounds the model downloads that run at once (default
// DefaultMaxDownloads); the others wait, reported as agentapi.StateQueued.
func WithMaxDownloads(n int) Option {
	return func(a *Agent) {
		if n > 0 {
			a.slots = make(chan struct{}, n)
		}
	}
}

// New returns an agent over store and fetcher. reg may be nil (no metrics).
func New(store *cache.Store, fetcher Fetcher, log *slog.Logger, reg Registerer, opts ...Option) *Agent {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{store: store, fetcher: fetcher, log: log, ctx: ctx, cancel: cancel, jobs: map[string]*job{},
		access: newAccessCache(), slots: make(chan struct{}, DefaultMaxDownloads)}
	for _, o := range opts {
		o(a)
	}
	a.metrics = newMetrics(reg, store)
	return a
}

// Close stops running downloads (their ingests stay for a resume) and waits.
func (a *Agent) Close() {
	a.cancel()
	a.wg.Wait()
	if err := a.store.Flush(); err != nil {
		a.log.Error("flush cache state", "err", err)
	}
}

// job is one model download; callers join it until it ends.
type job struct {
	ref     model.Ref
	started time.Time
	done    chan struct{}

	total   atomic.Int64
	files   atomic.Int64
	doneN   atomic.Int64 // bytes held so far: resumed + deduplicated + fetched
	fetched atomic.Int64
	listing atomic.Bool
	queued  atomic.Bool
	creds   *model.Credentials // a volume's, for this download only
	// forVolume: a pod waits for this download (the CSI plugin asked).
	forVolume bool
	warm      jobWarm // the page-cache warm-up some ensure asked for

	// set before done is closed
	finished time.Time
	model    cache.Model
	err      error
}

func (j *job) progress() agentapi.Progress {
	p := agentapi.Progress{Ref: j.ref.String(), Started: j.started, TotalBytes: j.total.Load(),
		DoneBytes: j.doneN.Load(), Files: int(j.files.Load()), FetchedBytes: j.fetched.Load()}
	select {
	case <-j.done:
		p.Finished = j.finished
		if j.err != nil {
			p.State, p.Error, p.ErrorClass = agentapi.StateFailed, j.err.Error(), Classify(j.err)
		} else {
			p.State, p.Revision, p.Path = agentapi.StateReady, j.model.Revision, j.model.Path
		}
	default:
		p.State = agentapi.StateFetching
		if j.queued.Load() {
			p.State = agentapi.StateQueued
		} else if j.listing.Load() {
			p.State = agentapi.StateListing
		}
	}
	end := p.Finished
	if end.IsZero() {
		end = time.Now()
	}
	if secs := end.Sub(j.started).Seconds(); secs > 0 {
		p.BytesPerSecond = float64(p.FetchedBytes) / secs
		if p.BytesPerSecond > 0 && p.State == agentapi.StateFetching {
			p.ETASeconds = float64(p.TotalBytes-p.DoneBytes) / p.BytesPerSecond
		}
	}
	return p
}

// Ensure makes ref available on this node: a hit returns at once; otherwise
// it starts the download or joins the one running, and waits up to
// opts.Wait. The returned progress says ready, fetching or failed; err is set
// only for input the agent refuses outright or a failed download.
func (a *Agent) Ensure(ctx context.Context, ref model.Ref, opts agentapi.EnsureOptions) (agentapi.Progress, error) {
	return a.EnsureWatch(ctx, ref, opts, 0, nil)
}

// EnsureWatch is Ensure that also calls fn with the progress every interval
// while it waits (for a live progress bar).
func (a *Agent) EnsureWatch(ctx context.Context, ref model.Ref, opts agentapi.EnsureOptions, interval time.Duration, fn func(agentapi.Progress)) (agentapi.Progress, error) {
	if err := a.authorize(ctx, ref, opts.Access); err != nil {
		a.log.Warn("access refused", "ref", ref.String(), "namespace", opts.Access.Namespace, "err", err)
		return agentapi.Progress{Ref: ref.String(), State: agentapi.StateFailed, Error: err.Error(), ErrorClass: Classify(err)}, err
	}
	var creds *model.Credentials
	if opts.Access != nil {
		creds = opts.Access.Credentials
	}
	j, hit := a.start(ref, opts.Refresh, creds, opts.Access != nil)
	if hit != nil {
		if opts.WarmPageCache {
			hit.Warm = a.warm(ctx, hit.Ref, hit.Path)
		}
		return *hit, nil
	}
	if opts.WarmPageCache {
		a.requestWarm(j)
	}
	if opts.Wait > 0 {
		t := time.NewTimer(opts.Wait)
		defer t.Stop()
		var tick <-chan time.Time
		if fn != nil && interval > 0 {
			tk := time.NewTicker(interval)
			defer tk.Stop()
			tick = tk.C
		}
	wait:
		for {
			select {
			case <-j.done:
				break wait
			case <-t.C:
				break wait
			case <-ctx.Done():
				break wait
			case <-tick:
				fn(j.progress())
			}
		}
	}
	p := j.progress()
	if p.State == agentapi.StateFailed {
		return p, j.err
	}
	if opts.WarmPageCache && p.State == agentapi.StateReady {
		select {
		case <-j.warm.done:
			p.Warm = j.warm.rep
		case <-ctx.Done():
		}
	}
	return p, nil
}

// start returns a ready progress for a hit, else the job to wait on. A
// download it starts uses creds, if set, instead of the source's; one for
// a volume may evict models only prefetches pin (cache.EvictYielding).
func (a *Agent) start(ref model.Ref, refresh bool, creds *model.Credentials, forVolume bool) (*job, *agentapi.Progress) {
	if !refresh {
		if m, err := a.store.Lookup(ref); err == nil {
			a.metrics.ensure(ref, "hit")
			return nil, &agentapi.Progress{Ref: ref.String(), State: agentapi.StateReady, Hit: true, Revision: m.Revision,
				Path: m.Path, TotalBytes: m.Size, DoneBytes: m.Size, Files: m.Files}
		}
	}
	key := ref.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.jobs[key]; j != nil {
		select {
		case <-j.done:
			// A finished job is only kept for status; a new ensure starts afresh
			// (a failed download is retried, a refresh lists again).
		default:
			return j, nil
		}
	}
	a.pruneJobsLocked(time.Now())
	j := &job{ref: ref, started: time.Now(), done: make(chan struct{}), creds: creds, forVolume: forVolume}
	j.listing.Store(true)
	j.queued.Store(true)
	a.jobs[key] = j
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		var m cache.Model
		var err error
		select {
		case a.slots <- struct{}{}:
			j.queued.Store(false)
			a.metrics.inFlight.Inc()
			m, err = a.download(j)
			a.metrics.inFlight.Dec()
			<-a.slots
		case <-a.ctx.Done():
			err = a.ctx.Err()
		}
		a.mu.Lock()
		j.model, j.err, j.finished = m, err, time.Now()
		close(j.done)
		a.mu.Unlock()
		a.metrics.observe(j, err)
		if err != nil {
			a.log.Error("model download failed", "ref", key, "class", Classify(err), "err", err)
		} else {
			a.log.Info("model ready", "ref", key, "revision", m.Revision, "bytes", m.Size,
				"fetchedBytes", j.fetched.Load(), "seconds", j.finished.Sub(j.started).Seconds())
		}
	}()
	return j, nil
}

func (a *Agent) download(j *job) (cache.Model, error) {
	ref := j.ref
	ctx := a.ctx
	m, err := a.fetcher.List(ctx, ref.Location(), j.creds)
	j.listing.Store(false)
	if err != nil {
		return cache.Model{}, err
	}
	rev := m.Revision()
	j.total.Store(m.Size())
	j.files.Store(int64(len(m.Files)))
	if ref.Revision != "" && rev != ref.Revision {
		return cache.Model{}, fmt.Errorf("%w: %s revision %s is not held and the bucket now holds revision %s",
			cache.ErrNotFound, ref.Location(), ref.Revision, rev)
	}
	held := ref.Location()
	held.Revision = rev
	if hm, err := a.store.Lookup(held); err == nil {
		// Known revision (a refresh that found no change): make it current.
		if stored, err := a.store.Manifest(held, rev); err == nil {
			if hm, err = a.store.PutModel(stored); err != nil {
				return cache.Model{}, err
			}
		}
		j.doneN.Store(hm.Size)
		a.metrics.ensure(ref, "hit")
		return hm, nil
	}
	a.metrics.ensure(ref, "miss")

	var need int64
	for _, f := range m.Files {
		if _, ok := a.store.LookupETag(ref.Scope(), f.ETag, f.Size); !ok {
			need += f.Size
		}
	}
	var ropts []cache.ReserveOption
	if j.forVolume {
		ropts = append(ropts, cache.EvictYielding())
	}
	res, err := a.store.Reserve(need, ropts...)
	if err != nil {
		return cache.Model{}, fmt.Errorf("%s (%s, %d files): %w", ref.Location(), model.FormatBytes(m.Size()), len(m.Files), err)
	}
	defer res.Release()
	full, stats, err := a.fetcher.Fetch(ctx, ref.Location(), j.creds, m, res, func(n int64, fetched bool) {
		j.doneN.Add(n)
		if fetched {
			j.fetched.Add(n)
		}
	})
	j.fetched.Store(stats.BytesFetched)
	src := ref.SchemeName()
	a.metrics.fetched.WithLabelValues(src).Add(float64(stats.BytesFetched))
	a.metrics.deduped.WithLabelValues(src).Add(float64(stats.BytesDeduped))
	a.metrics.resumed.WithLabelValues(src).Add(float64(stats.BytesResumed))
	if errors.Is(err, unix.ENOSPC) {
		err = fmt.Errorf("%w (the cache filesystem is full before --capacity %s is reached: lower --capacity or free the disk)",
			err, model.FormatBytes(a.store.Status().CapacityBytes))
	}
	if err != nil {
		return cache.Model{}, err
	}
	return a.store.PutModel(full)
}

// Finished downloads stay in the job map for status only: a while, and at
// most maxFinishedJobs of them, so ensures of ever new refs (which any
// tenant can send) do not grow the map without bound.
const (
	finishedJobTTL  = 15 * time.Minute
	maxFinishedJobs = 256
)

// pruneJobsLocked drops finished jobs past finishedJobTTL, then the oldest
// finished ones past maxFinishedJobs; a.mu held.
func (a *Agent) pruneJobsLocked(now time.Time) {
	var finished []string
	for k, j := range a.jobs {
		select {
		case <-j.done:
			if now.Sub(j.finished) > finishedJobTTL {
				delete(a.jobs, k)
			} else {
				finished = append(finished, k)
			}
		default:
		}
	}
	if len(finished) <= maxFinishedJobs {
		return
	}
	sort.Slice(finished, func(i, k int) bool { return a.jobs[finished[i]].finished.Before(a.jobs[finished[k]].finished) })
	for _, k := range finished[:len(finished)-maxFinishedJobs] {
		delete(a.jobs, k)
	}
}

// Jobs reports downloads that are running or ended since the agent started.
func (a *Agent) Jobs() []agentapi.Progress {
	a.mu.Lock()
	jobs := make([]*job, 0, len(a.jobs))
	for _, j := range a.jobs {
		jobs = append(jobs, j)
	}
	a.mu.Unlock()
	out := make([]agentapi.Progress, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.progress())
	}
	return out
}

// Pin pins ref for holder: ref.Revision if set, else the current revision.
// It returns the pinned model.
func (a *Agent) Pin(ref model.Ref, holder string) (cache.Model, error) {
	m, err := a.store.Lookup(ref)
	if err != nil {
		return cache.Model{}, err
	}
	if err := a.store.Pin(ref, m.Revision, holder); err != nil {
		return cache.Model{}, err
	}
	return m, nil
}

// Unpin drops holder's pin on ref.Revision, or on every revision if empty.
func (a *Agent) Unpin(ref model.Ref, holder string) error {
	return a.store.Unpin(ref, ref.Revision, holder)
}

// Evict removes unpinned revisions of ref (ref.Revision only, if set).
func (a *Agent) Evict(ref model.Ref) ([]string, error) {
	return a.store.Evict(ref, ref.Revision)
}

// Changed is signalled when a model becomes ready or is removed (see
// cache.Store.Changed); one reader.
func (a *Agent) Changed() <-chan struct{} { return a.store.Changed() }

// Status is the store snapshot plus downloads, as the status API answers it.
func (a *Agent) Status() agentapi.StatusReport {
	return agentapi.StatusReport{Status: wireStatus(a.store.Status()), Partials: wirePartials(a.store.Partials()), Jobs: a.Jobs()}
}

// Run flushes batched cache state now and then until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.store.Flush(); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("flush cache state", "err", err)
			}
		}
	}
}
