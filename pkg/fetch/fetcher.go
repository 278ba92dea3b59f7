// Package fetch downloads models from S3 and S3-compatible servers into the
// content store: it lists a model's objects into a manifest, then fetches
// every file with parallel ranged GETs (across files and within large ones)
// into resumable cache ingests, hashing each leaf while it streams.
package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/oauth2"

	"github.com/modelcache/modelcache/pkg/model"
)

// Defaults. 16 ranged GETs of 16 MiB keep a 25 Gbit/s link busy against S3
// (the aws-sdk-go-v2 downloader's and rclone's tuned settings) while holding
// only 16 × 256 KiB of buffers. Each buffer is filled from the socket, hashed
// and written with one pwrite while it is still in the CPU cache: on the
// 2-core bench machine 1 MiB pieces made the kernel's copy into the page
// cache 3-4 times as expensive (7.5 s of system CPU per 4.3 GB instead of
// 2.1 s); 256 KiB was the fastest of 128 KiB-1 MiB.
const (
	DefaultConcurrency  = 16
	DefaultPartSize     = 2 * model.LeafSize
	DefaultMaxAttempts  = 5
	DefaultStallTimeout = 30 * time.Second
	bufferSize          = 256 << 10
)

// Limits on what one listing may hold, so a server that lists without end
// (or a bucket far larger than a model) fails clearly instead of growing
// the agent's memory: 100,000 files is 20 times the largest model repo we
// know of, and a manifest of that many is about 20 MB.
const (
	DefaultMaxFiles    = 100_000
	DefaultMaxPages    = 10_000
	DefaultListTimeout = 10 * time.Minute
)

// Fetcher lists and downloads models. Create it with New; it is safe for
// concurrent use and holds no per-download state.
type Fetcher struct {
	sources      map[string]Source
	concurrency  int
	partSize     int64
	maxAttempts  int
	backoff      time.Duration // first retry delay; doubles up to maxBackoff
	maxBackoff   time.Duration
	stallTimeout time.Duration
	log          *slog.Logger
	http         aws.HTTPClient
	endpoints    map[string]bool // endpoints a ref may name without a source
	maxFiles     int
	maxPages     int
	listTimeout  time.Duration
	gets         *gets // the ranged GETs of every Fetch, at most concurrency

	mu         sync.Mutex
	clients    map[string]*target     // by source, endpoint, region
	hub        *http.Client           // the Hub's, on the S3 client's transport
	defaultCfg *aws.Config            // AWS default chain, loaded on first use
	azIdentity azcore.TokenCredential // the agent's Entra ID identity, built on first use
	gcsADC     oauth2.TokenSource     // GCS Application Default Credentials, found on first use
}

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithConcurrency sets how many ranged GETs run at once (default 16), in
// all: Fetch calls that run at the same time share them.
func WithConcurrency(n int) Option { return func(f *Fetcher) { f.concurrency = n } }

// WithPartSize sets the size of each ranged GET, a positive multiple of
// model.LeafSize (default 16 MiB); 0 keeps the default.
func WithPartSize(n int64) Option {
	return func(f *Fetcher) {
		if n != 0 {
			f.partSize = n
		}
	}
}

// WithMaxAttempts bounds the attempts per request, the first included
// (default 5; 1 disables retries).
func WithMaxAttempts(n int) Option { return func(f *Fetcher) { f.maxAttempts = n } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(f *Fetcher) { f.log = l } }

// WithHTTPClient replaces the tuned HTTP client (tests, proxies).
func WithHTTPClient(c aws.HTTPClient) Option { return func(f *Fetcher) { f.http = c } }

// WithStallTimeout fails (and retries) a request whose connection delivers
// no byte for d (default 30s).
func WithStallTimeout(d time.Duration) Option { return func(f *Fetcher) { f.stallTimeout = d } }

// WithAllowedEndpoints sets the endpoints a ref may name with endpoint=
// (and no source): the operator's allow-list. Requests to them are unsigned
// unless the volume brings credentials; the agent's own identity never goes
// to an endpoint a ref names.
func WithAllowedEndpoints(urls []string) Option {
	return func(f *Fetcher) {
		for _, u := range urls {
			f.endpoints[u] = true
		}
	}
}

// WithListLimits bounds a listing: files in the model, pages, and time
// (defaults DefaultMaxFiles, DefaultMaxPages, DefaultListTimeout; 0 keeps
// a default).
func WithListLimits(maxFiles, maxPages int, timeout time.Duration) Option {
	return func(f *Fetcher) {
		if maxFiles != 0 {
			f.maxFiles = maxFiles
		}
		if maxPages != 0 {
			f.maxPages = maxPages
		}
		if timeout != 0 {
			f.listTimeout = timeout
		}
	}
}

// New returns a Fetcher for the named sources. Refs without a source or an
// endpoint use the AWS default credential chain against AWS S3 (gs:// refs:
// Application Default Credentials against GCS); refs with an endpoint must
// name one WithAllowedEndpoints lists.
func New(sources map[string]Source, opts ...Option) (*Fetcher, error) {
	f := &Fetcher{sources: map[string]Source{}, concurrency: DefaultConcurrency, partSize: DefaultPartSize,
		maxAttempts: DefaultMaxAttempts, backoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second,
		stallTimeout: DefaultStallTimeout, clients: map[string]*target{}, endpoints: map[string]bool{},
		maxFiles: DefaultMaxFiles, maxPages: DefaultMaxPages, listTimeout: DefaultListTimeout}
	for name, s := range sources {
		var r model.Ref
		if err := r.SetOption("source", name); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("fetch: source %q: %w", name, err)
		}
		f.sources[name] = s
	}
	for _, o := range opts {
		o(f)
	}
	switch {
	case f.concurrency < 1:
		return nil, fmt.Errorf("fetch: concurrency %d: want at least 1", f.concurrency)
	case f.partSize <= 0 || f.partSize%model.LeafSize != 0:
		return nil, fmt.Errorf("fetch: part size %d: want a positive multiple of %d (the digest leaf)", f.partSize, model.LeafSize)
	case f.maxAttempts < 1:
		return nil, fmt.Errorf("fetch: max attempts %d: want at least 1", f.maxAttempts)
	case f.stallTimeout <= 0:
		return nil, fmt.Errorf("fetch: stall timeout %s: want > 0", f.stallTimeout)
	case f.maxFiles < 1 || f.maxPages < 1 || f.listTimeout <= 0:
		return nil, fmt.Errorf("fetch: list limits (%d files, %d pages, %s): want positive", f.maxFiles, f.maxPages, f.listTimeout)
	}
	for u := range f.endpoints {
		var r model.Ref
		if err := r.SetOption("endpoint", u); err != nil {
			return nil, fmt.Errorf("fetch: allowed endpoint: %w", err)
		}
		if r.Endpoint != u { // compare refs' endpoints in their canonical form
			delete(f.endpoints, u)
			f.endpoints[r.Endpoint] = true
		}
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.http == nil {
		f.http = newHTTPClient(f.concurrency, f.stallTimeout)
	}
	f.gets = newGets(f.concurrency)
	return f, nil
}

// newHTTPClient tunes the SDK's buildable client (which keeps AWS_CA_BUNDLE
// working) for a few long parallel downloads instead of many small calls.
func newHTTPClient(concurrency int, stall time.Duration) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithTransportOptions(func(tr *http.Transport) {
			// Every worker keeps its connection between parts (plus one for a
			// listing); the default of 10 idle per host would make the rest
			// reconnect for every part.
			tr.MaxIdleConns = max(100, 2*concurrency)
			tr.MaxIdleConnsPerHost = 2 * concurrency
			// Weights do not compress, and transparent gzip would hide the
			// byte counts ranged GETs depend on.
			tr.DisableCompression = true
			// Bodies are read in 256 KiB pieces, which bufio hands straight to
			// the socket once its buffer is empty; the buffer only carries the
			// headers and the first bytes after them. Some servers (versitygw)
			// close every connection after one response, so each part pays for
			// a new one: 320 KiB of buffers per part were only garbage that
			// lifted the agent's peak RSS by ~12 MiB.
			tr.ReadBufferSize = 32 << 10
			tr.WriteBufferSize = 4 << 10
			// One TCP connection per ranged GET: HTTP/2 would multiplex every
			// part through one connection and one congestion window.
			tr.ForceAttemptHTTP2 = false
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			tr.ResponseHeaderTimeout = stall
		}).
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = 10 * time.Second
			d.KeepAlive = 30 * time.Second
		}).
		// A connection that delivers nothing for this long is broken; the
		// part is retried from its last byte.
		WithReadTimeout(stall)
}

// target is one S3 client and what to say about it in errors.
type target struct {
	client   *s3.Client
	endpoint string // shown in messages and used in ingest origins
	creds    string // "source \"x\" (static keys)", never the keys
}

// target returns the client for ref: one per source, endpoint and region,
// cached so connections are pooled across downloads; or, with a volume's
// creds, one of its own.
func (f *Fetcher) target(ctx context.Context, ref model.Ref, creds *model.Credentials) (*target, error) {
	src, named := f.sources[ref.Source]
	if ref.Source != "" && !named {
		return nil, &Error{Class: ErrUnknownSource, Bucket: ref.Bucket, Key: ref.Prefix,
			Msg: fmt.Sprintf("source %q is not in the agent's sources file (%s)", ref.Source, sourceNames(f.sources))}
	}
	endpoint, region, pathStyle := ref.Endpoint, ref.Region, ref.Endpoint != ""
	if named && src.Type != "" && src.Type != SourceS3 {
		return nil, &Error{Class: model.ErrInvalidRef, Bucket: ref.Bucket, Key: ref.Prefix,
			Msg: fmt.Sprintf("source %q is %s; an s3:// ref needs an S3 source", ref.Source, src.kind())}
	}
	if named {
		// A source's credentials go to its own endpoint only: a ref must not
		// be able to send them (or requests signed with them) elsewhere.
		if ref.Endpoint != "" && ref.Endpoint != src.Endpoint {
			return nil, &Error{Class: model.ErrInvalidRef, Bucket: ref.Bucket, Key: ref.Prefix,
				Msg: fmt.Sprintf("endpoint %s differs from source %q's endpoint %q; drop one of them", ref.Endpoint, ref.Source, src.Endpoint)}
		}
		endpoint, pathStyle = src.Endpoint, src.PathStyle
		if region == "" {
			region = src.Region
		}
	} else if endpoint != "" && !f.endpoints[endpoint] {
		// Endpoints are the operator's choice: a pod or a workload in any
		// namespace writes refs, and a server it runs could list the ETags
		// and sizes of another tenant's files, or collect the agent's
		// signature.
		return nil, &Error{Class: ErrAccessDenied, Bucket: ref.Bucket, Key: ref.Prefix,
			Msg: fmt.Sprintf("endpoint %s is not allowed: the operator lists the endpoints refs may name under endpoints: in the agent's sources file (%s); or use a named source", endpoint, endpointNames(f.endpoints))}
	}
	withVolume := creds != nil
	key := ref.Source + "\x00" + endpoint + "\x00" + region
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.clients[key]; ok && !withVolume {
		return t, nil
	}
	var cfg aws.Config
	t := &target{endpoint: endpoint}
	if withVolume {
		// Not cached: one client per request is cheap next to a download,
		// and keeps a volume's keys out of every shared structure.
		if err := creds.Validate(); err != nil {
			return nil, &Error{Class: model.ErrInvalidRef, Bucket: ref.Bucket, Key: ref.Prefix, Msg: err.Error()}
		}
		cfg = aws.Config{Credentials: volumeProvider(*creds), HTTPClient: f.http}
		t.creds = "the volume's credentials " + creds.String()
	} else if named && src.credentialsProvider() != nil {
		cfg = aws.Config{Credentials: src.credentialsProvider(), HTTPClient: f.http}
		t.creds = fmt.Sprintf("source %q (%s)", ref.Source, src.credentialsKind())
	} else if !named && endpoint != "" {
		// The agent's identity (its keys, its IRSA session) goes only where
		// the operator configured it: a source, or AWS S3 itself.
		cfg = aws.Config{Credentials: aws.AnonymousCredentials{}, HTTPClient: f.http}
		t.creds = "no credentials (an endpoint a ref names is sent unsigned requests unless the volume brings keys)"
	} else {
		if f.defaultCfg == nil {
			c, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(f.http))
			if err != nil {
				return nil, fmt.Errorf("fetch: load AWS default configuration: %w", err)
			}
			f.defaultCfg = &c
		}
		cfg = f.defaultCfg.Copy()
		cfg.Credentials = chainCredentials{cfg.Credentials}
		t.creds = "the AWS default credential chain"
		if named {
			t.creds = fmt.Sprintf("source %q (AWS default credential chain)", ref.Source)
		}
		if region == "" {
			region = cfg.Region
		}
	}
	if region == "" {
		region = "us-east-1"
	}
	cfg.Region = region
	if t.endpoint == "" {
		t.endpoint = "https://s3." + region + ".amazonaws.com"
	}
	t.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle
		// Retries are ours: per part, from the last byte written, and never
		// for answers a retry cannot change.
		o.Retryer = aws.NopRetryer{}
		// Ranged GETs carry no full-object checksum; leaves are hashed anyway.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	if !withVolume {
		f.clients[key] = t
	}
	return t, nil
}

func endpointNames(m map[string]bool) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none are"
	}
	return "allowed: " + strings.Join(names, ", ")
}

// chainCredentials marks failures of the default chain (no credentials
// found, IMDS unreachable) so they are not retried and read as "access denied".
type chainCredentials struct{ p aws.CredentialsProvider }

func (c chainCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	if c.p == nil {
		return aws.Credentials{}, &credentialsError{errors.New("no credentials provider")}
	}
	v, err := c.p.Retrieve(ctx)
	if err != nil {
		return v, &credentialsError{err}
	}
	return v, nil
}

// fail turns an S3 or network error into an *Error that says what to check.
func (t *target) fail(err error, bucket, key string, attempts int) error {
	k := classify(err)
	e := &Error{Class: k.class, Bucket: bucket, Key: key, Err: err}
	var che *changedError
	var ce *credentialsError
	switch {
	case errors.As(err, &ce):
		e.Msg = fmt.Sprintf("no usable credentials from %s for %s", t.creds, t.endpoint)
	case apiCode(err) == "NoSuchBucket":
		e.Msg = fmt.Sprintf("bucket %q does not exist at %s", bucket, t.endpoint)
	case k.class == ErrNotFound:
		e.Msg = fmt.Sprintf("object does not exist at %s", t.endpoint)
	case k.class == ErrAccessDenied:
		e.Msg = fmt.Sprintf("access denied at %s for %s", t.endpoint, t.creds)
	case errors.As(err, &che):
		e.Msg, e.Err = che.msg+"; list the model again", nil // the cause is the message
	case k.class == ErrChanged:
		e.Msg = k.what + "; list the model again"
	case strings.Contains(k.what, "%s"):
		e.Msg = fmt.Sprintf(k.what, t.endpoint)
	default:
		e.Msg = k.what
	}
	if k.retry && attempts > 1 {
		e.Msg += fmt.Sprintf(" (after %d attempts)", attempts)
	}
	return e
}

// retry runs op until it succeeds, fails in a way no retry fixes, or has
// had maxAttempts attempts. progressed (may be nil) reports whether the
// failed attempt moved forward; such an attempt does not count, so a long
// transfer over a flaky link keeps going as long as each try gains ground.
func (f *Fetcher) retry(ctx context.Context, o retrier, key string, op func() error, progressed func() bool, retries *atomic.Int64) error {
	failures := 0
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var le *localError
		if errors.As(err, &le) {
			return fmt.Errorf("fetch %s: %w", o.where(key), le.err)
		}
		if progressed != nil && progressed() {
			failures = 0
		}
		failures++
		k := o.classify(err)
		if !k.retry || failures >= f.maxAttempts {
			return o.failure(err, key, failures)
		}
		if retries != nil {
			retries.Add(1)
		}
		// By hand, not apimachinery's wait.Backoff: pkg/fetch links no
		// Kubernetes module, and that one would bring 14 (klog, util/runtime,
		// utils/clock) for two lines; and a try that gained ground starts the
		// doubling over, which a stateful Backoff would need rebuilding for.
		d := min(f.maxBackoff, f.backoff<<(failures-1))
		d = d/2 + rand.N(d/2+1) // jitter: parallel workers must not retry in lockstep
		f.log.Info("retrying request", "file", o.where(key), "attempt", failures+1,
			"in", d.Round(time.Millisecond).String(), "err", causeText(err))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// localError is a failure on our side (cache write): never retried.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }
