package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// serveOptions are the agent's settings; every field is a flag.
type serveOptions struct {
	CacheDir      string
	MetricsAddr   string
	Capacity      string // bytes with a unit, or a percentage of the filesystem
	HighWatermark float64
	LowWatermark  float64
	SourcesFile   string
	Concurrency   int
	PartSize      string
	ScrubInterval time.Duration
	ScrubRate     string
	PartialMaxAge time.Duration
	MaxFiles      int
	MaxListPages  int
	ListTimeout   time.Duration
	MaxDownloads  int
	Prefetch      prefetchOptions
}

func (o *serveOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.CacheDir, "cache-dir", "/var/lib/modelcache", "directory of the cache on local disk (NVMe); the agent is its only writer")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":9090", `address for Prometheus /metrics and /healthz ("" disables)`)
	fs.StringVar(&o.Capacity, "capacity", "80%", `most the cache may hold: bytes with a unit ("500GiB", "2TB") or a percentage of the cache filesystem ("80%")`)
	fs.Float64Var(&o.HighWatermark, "high-watermark", 0.9, "fraction of capacity past which a new download first evicts least recently used unpinned models")
	fs.Float64Var(&o.LowWatermark, "low-watermark", 0.8, "fraction of capacity eviction brings usage down to")
	fs.StringVar(&o.SourcesFile, "sources-file", "", "YAML file of named S3 sources (endpoint, region, path style, credentials); refs select one with ?source=NAME. A missing file means no named sources (an optional Secret)")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "parallel ranged GETs of the whole agent, shared fairly by the models downloading at once")
	fs.StringVar(&o.PartSize, "part-size", "16MiB", "size of each ranged GET (a multiple of 8MiB)")
	fs.DurationVar(&o.ScrubInterval, "scrub-interval", 24*time.Hour, "how often a background scrub re-hashes every blob, quarantines corrupt ones and fetches again those pinned models use (0 disables)")
	fs.StringVar(&o.ScrubRate, "scrub-rate", "64MiB", "most bytes per second the background scrub reads")
	fs.DurationVar(&o.PartialMaxAge, "partial-max-age", 24*time.Hour, "how long a partial download nobody resumes is kept on disk for a resume (checked at start and at most hourly; 0 keeps them)")
	fs.IntVar(&o.MaxFiles, "max-files", fetch.DefaultMaxFiles, "most files one model may have; a listing with more fails (a bucket is not a model, or the server lies)")
	fs.IntVar(&o.MaxListPages, "max-list-pages", fetch.DefaultMaxPages, "most ListObjectsV2 pages one listing may take")
	fs.DurationVar(&o.ListTimeout, "list-timeout", fetch.DefaultListTimeout, "most time one listing may take")
	fs.IntVar(&o.MaxDownloads, "max-downloads", agent.DefaultMaxDownloads, "models downloaded at once (sharing --concurrency GETs); more wait, shown as queued")
	o.Prefetch.AddFlags(fs)
}

func (o *serveOptions) Validate() error {
	if o.CacheDir == "" {
		return errors.New("--cache-dir is required")
	}
	if o.Concurrency < 1 || o.Concurrency > 256 {
		return fmt.Errorf("--concurrency %d: want 1..256", o.Concurrency)
	}
	if ps, err := parseBytes(o.PartSize); err != nil || ps <= 0 || ps%model.LeafSize != 0 {
		return fmt.Errorf("--part-size %q: want a positive multiple of 8MiB", o.PartSize)
	}
	if o.ScrubInterval < 0 {
		return fmt.Errorf("--scrub-interval %s: want 0 (off) or more", o.ScrubInterval)
	}
	if o.PartialMaxAge < 0 {
		return fmt.Errorf("--partial-max-age %s: want 0 (keep) or more", o.PartialMaxAge)
	}
	if o.MaxDownloads < 1 || o.MaxDownloads > 64 {
		return fmt.Errorf("--max-downloads %d: want 1..64", o.MaxDownloads)
	}
	if o.MaxFiles < 1 || o.MaxListPages < 1 || o.ListTimeout <= 0 {
		return fmt.Errorf("--max-files %d, --max-list-pages %d, --list-timeout %s: want positive", o.MaxFiles, o.MaxListPages, o.ListTimeout)
	}
	if r, err := parseBytes(o.ScrubRate); err != nil || r <= 0 {
		return fmt.Errorf("--scrub-rate %q: want a positive size per second, e.g. 64MiB", o.ScrubRate)
	}
	return nil
}

func newServeCmd(socket *string) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the node agent (one per node)",
		Long: `Run the node agent in the foreground until SIGTERM: it serves the API on --socket,
downloads models into --cache-dir and exposes metrics on --metrics-addr. Downloads
interrupted by a crash or restart resume from what is already on disk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			kube, err := o.Prefetch.resolve(cmd.Flags(), rest.InClusterConfig)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), o, *socket, kube)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// serve runs the agent; kube, if set, runs the prefetch controller too.
func serve(ctx context.Context, o *serveOptions, socket string, kube *rest.Config) error {
	log := slog.Default()
	capacity, err := parseCapacity(o.Capacity, o.CacheDir)
	if err != nil {
		return err
	}
	store, err := cache.Open(o.CacheDir, cache.Options{Capacity: capacity,
		HighWatermark: o.HighWatermark, LowWatermark: o.LowWatermark, Logger: log,
		// Prefetch pins give way to the volumes of pods (see cache.EvictYielding).
		Yields: func(holder string) bool { return strings.HasPrefix(holder, prefetch.HolderPrefix) }})
	if err != nil {
		return err
	}
	defer store.Close()
	var cfg fetch.Config
	if o.SourcesFile != "" {
		// A missing file is an optional Secret that does not exist (kubelet
		// mounts an empty directory): refs may then only use the AWS default
		// chain. Any other read error, or a bad file, stops the agent.
		if _, serr := os.Stat(o.SourcesFile); errors.Is(serr, os.ErrNotExist) {
			log.Warn("sources file does not exist: no named sources, refs with ?source= will fail", "file", o.SourcesFile)
		} else if cfg, err = fetch.LoadConfig(o.SourcesFile); err != nil {
			return err
		}
	}
	sources := cfg.Sources
	partSize, _ := parseBytes(o.PartSize)
	fetcher, err := fetch.New(sources, fetch.WithConcurrency(o.Concurrency), fetch.WithPartSize(partSize), fetch.WithLogger(log),
		fetch.WithAllowedEndpoints(cfg.Endpoints), fetch.WithListLimits(o.MaxFiles, o.MaxListPages, o.ListTimeout))
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := agent.New(store, fetcher, log, reg, agent.WithMaxDownloads(o.MaxDownloads))
	defer a.Close()

	l, err := agent.ListenUnix(socket)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- a.Serve(ctx, l) }()
	go a.Run(ctx)
	scrubRate, _ := parseBytes(o.ScrubRate)
	go a.Scrub(ctx, o.ScrubInterval, scrubRate)
	go a.ExpirePartials(ctx, o.PartialMaxAge)
	if kube != nil {
		if err := startPrefetch(ctx, kube, &o.Prefetch, a, log); err != nil {
			return err
		}
	}
	if o.MetricsAddr != "" {
		ml, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/healthz", a.Handler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(ml)
		defer msrv.Close()
		log.Info("metrics listening", "addr", ml.Addr().String())
	}
	st := store.Status()
	log.Info("cache agent ready", "socket", socket, "cacheDir", o.CacheDir, "capacity", model.FormatBytes(st.CapacityBytes),
		"used", model.FormatBytes(st.UsedBytes), "models", len(st.Models), "sources", len(sources), "version", buildinfo.Version(version))
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return <-errc
	case err := <-errc:
		return err
	}
}

// parseCapacity accepts "80%" of the cache filesystem's size or a byte size.
func parseCapacity(s, dir string) (int64, error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || p <= 0 || p > 100 {
			return 0, fmt.Errorf("--capacity %q: want a percentage in (0, 100]", s)
		}
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return 0, fmt.Errorf("create %s: %w", dir, err)
			}
			if err := unix.Statfs(dir, &st); err != nil {
				return 0, fmt.Errorf("--capacity %q: statfs %s: %w", s, dir, err)
			}
		}
		return int64(float64(int64(st.Blocks)*st.Bsize) * p / 100), nil
	}
	n, err := parseBytes(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--capacity %q: want a size like 500GiB or a percentage like 80%%", s)
	}
	return n, nil
}

// parseBytes parses a size the way Kubernetes does (resource.Quantity:
// "16Mi", "1.5Gi", "2T", "1024"), also with the "B" people add to units
// ("16MiB", "2TB", "500KB", "512B"), as the flags' defaults are written.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "B")
	if k, ok := strings.CutSuffix(t, "K"); ok {
		t = k + "k" // the decimal kilo of a Quantity is lower case
	}
	bad := fmt.Errorf("size %q: want a number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T; a B after it is fine)", s)
	q, err := resource.ParseQuantity(t)
	if err != nil || q.Sign() < 0 {
		return 0, bad
	}
	if q.Cmp(*resource.NewQuantity(math.MaxInt64, resource.BinarySI)) >= 0 {
		return 0, bad // ParseQuantity clamps what is past int64 to its max
	}
	return q.Value(), nil // a fraction of a byte rounds up
}
