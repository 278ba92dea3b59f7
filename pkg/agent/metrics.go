package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

// Registerer is where metrics go; *prometheus.Registry implements it.
type Registerer = prometheus.Registerer

// Per-model series carry a "source" label: the ref's scheme (s3, hf, oci,
// ...), a small fixed set, never the model itself, so the series count stays
// bounded whatever tenants ask for.
type metrics struct {
	fetchSeconds *prometheus.HistogramVec
	fetched      *prometheus.CounterVec
	deduped      *prometheus.CounterVec
	resumed      *prometheus.CounterVec
	ensures      *prometheus.CounterVec
	inFlight     prometheus.Gauge
	errors       *prometheus.CounterVec
	accessChecks *prometheus.CounterVec
	corrupt      prometheus.Counter
	repaired     prometheus.Counter
	scrubs       prometheus.Counter
	lastScrub    prometheus.Gauge
	// partialsDropped: see ExpirePartials.
	partialsDropped prometheus.Counter
}

func newMetrics(reg Registerer, store *cache.Store) *metrics {
	m := &metrics{
		fetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "modelcache_fetch_duration_seconds",
			Help:    "Time to make a model ready on this node (list, download, commit), by source scheme and result.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16), // 50 ms .. ~27 min
		}, []string{"source", "result"}),
		fetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_fetched_bytes_total", Help: "Bytes downloaded from the model's source, by source scheme."}, []string{"source"}),
		deduped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_dedup_saved_bytes_total", Help: "Bytes not downloaded because the cache already held the content, by source scheme."}, []string{"source"}),
		resumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_resumed_bytes_total", Help: "Bytes not downloaded again because an interrupted download had them, by source scheme."}, []string{"source"}),
		ensures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_ensure_total", Help: "Model requests by source scheme and result: hit (held) or miss (download started)."},
			[]string{"source", "result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modelcache_downloads_in_flight", Help: "Model downloads running now."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_errors_total", Help: "Failed model downloads by source scheme and error class."}, []string{"source", "class"}),
		accessChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_access_checks_total",
			Help: "Checks of a volume's credentials against the model's source, by source scheme and result: granted, denied, cached (answered from the last minute) or error (the source gave no answer)."},
			[]string{"source", "result"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelcache_corrupt_blobs_total", Help: "Blobs whose content no longer matched their digest (quarantined)."}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelcache_repaired_blobs_total", Help: "Corrupt blobs fetched again and swapped into pinned revisions."}),
		scrubs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelcache_scrubs_total", Help: "Background scrubs run (see --scrub-interval)."}),
		lastScrub: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modelcache_last_scrub_timestamp_seconds", Help: "When the last background scrub finished."}),
		partialsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modelcache_partial_downloads_dropped_total", Help: "Partial downloads removed because nobody resumed them within --partial-max-age."}),
	}
	if reg == nil {
		return m
	}
	stat := func(f func(cache.Status) float64) func() float64 {
		return func() float64 { return f(store.Status()) }
	}
	reg.MustRegister(m.fetchSeconds, m.fetched, m.deduped, m.resumed, m.ensures, m.inFlight, m.errors, m.accessChecks,
		m.corrupt, m.repaired, m.scrubs, m.lastScrub, m.partialsDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "modelcache_cache_used_bytes", Help: "Bytes of content on disk."},
			stat(func(s cache.Status) float64 { return float64(s.UsedBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "modelcache_cache_capacity_bytes", Help: "Cache capacity."},
			stat(func(s cache.Status) float64 { return float64(s.CapacityBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "modelcache_cache_reserved_bytes", Help: "Bytes reserved by running downloads."},
			stat(func(s cache.Status) float64 { return float64(s.ReservedBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "modelcache_cache_dedup_saved_bytes", Help: "Bytes the held models would take without deduplication, minus what they take."},
			stat(func(s cache.Status) float64 { return float64(s.SavedBytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "modelcache_evictions_total", Help: "Model revisions evicted since the agent started."},
			stat(func(s cache.Status) float64 { return float64(s.Evictions) })),
	)
	return m
}

func (m *metrics) observe(j *job, err error) {
	src, result := j.ref.SchemeName(), "ok"
	if err != nil {
		result = "error"
		m.errors.WithLabelValues(src, Classify(err)).Inc()
	}
	m.fetchSeconds.WithLabelValues(src, result).Observe(j.finished.Sub(j.started).Seconds())
}

func (m *metrics) ensure(ref model.Ref, result string) {
	m.ensures.WithLabelValues(ref.SchemeName(), result).Inc()
}
