package s3test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a reverse proxy in front of an S3 server that counts requests and
// bytes and can slow down or break responses. It forwards the Host header
// unchanged, so SigV4 signatures made for the proxy's address stay valid.
// Clients must use path-style addressing (bucket in the path).
type Proxy struct {
	srv *httptest.Server
	tr  *http.Transport // to the server

	requests    atomic.Int64
	inFlight    atomic.Int64
	getsNow     atomic.Int64 // object GETs being served
	getsPeak    atomic.Int64 // the most served at once
	objectBytes atomic.Int64
	totalBytes  atomic.Int64
	throttle    atomic.Int64 // bytes per second over all responses; 0: none
	delay       atomic.Int64 // nanoseconds before each request is forwarded

	mu       sync.Mutex
	counts   map[string]int
	gets     map[string]int // object GETs only
	next     time.Time      // throttle: when the next byte may go out
	hook     func(w http.ResponseWriter, r *http.Request) bool
	failN    int
	failCode int
	failS3   string
	truncN   int
	truncAt  int64
}

// NewCountingProxy starts a proxy to target (an http://host:port endpoint)
// that stops when the test ends.
func NewCountingProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		t.Fatalf("s3test: proxy target %q: %v", target, err)
	}
	p := &Proxy{counts: map[string]int{}, gets: map[string]int{},
		tr: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 256,
			ReadBufferSize: 256 << 10, WriteBufferSize: 256 << 10}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // signed by the client
		},
		Transport: p.tr,
		// Aborted downloads are what tests do on purpose; keep them quiet.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(rp, w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// CloseIdleConnections closes the proxy's idle connections to the server
// (kept alive: pooled, not leaked), for tests that count descriptors.
func (p *Proxy) CloseIdleConnections() { p.tr.CloseIdleConnections() }

// URL is the proxy's endpoint, http://127.0.0.1:PORT.
func (p *Proxy) URL() string { return p.srv.URL }

// Requests is the number of requests received.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// BytesSent is the number of object bytes sent: bodies of successful GETs of
// objects, not listings or error documents.
func (p *Proxy) BytesSent() int64 { return p.objectBytes.Load() }

// WaitIdle waits until no request is being served (a client that gave up
// leaves its response being written for a moment), so byte counts are
// final. It fails the test after timeout.
func (p *Proxy) WaitIdle(t testing.TB, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); p.inFlight.Load() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("s3test: proxy still serving %d requests after %s", p.inFlight.Load(), timeout)
		}
	}
}

// TotalBytesSent counts every response body byte, listings and errors too.
func (p *Proxy) TotalBytesSent() int64 { return p.totalBytes.Load() }

// Counts maps "METHOD PATH[?QUERY] [RANGE]" to how many times it was asked.
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

// GetCounts is Counts restricted to object GETs: "GET /bucket/key bytes=A-B".
func (p *Proxy) GetCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.gets)
}

// PeakGets is the most object GETs served at once (from their arrival to
// the end of their response) since the proxy started or was Reset.
func (p *Proxy) PeakGets() int64 { return p.getsPeak.Load() }

// Reset zeroes the counters.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.counts = map[string]int{}
	p.gets = map[string]int{}
	p.mu.Unlock()
	p.requests.Store(0)
	p.getsPeak.Store(p.getsNow.Load())
	p.objectBytes.Store(0)
	p.totalBytes.Store(0)
}

// SetThrottle limits all response bodies together to bytesPerSecond (0: no
// limit), so a test can stop a client part way through a download.
func (p *Proxy) SetThrottle(bytesPerSecond int64) {
	p.mu.Lock()
	p.next = time.Time{}
	p.mu.Unlock()
	p.throttle.Store(bytesPerSecond)
}

// SetDelay holds every request for d before forwarding it.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// SetHook runs h before each request is forwarded (after it is counted). If h
// returns true it has answered the request and nothing is forwarded. nil
// removes the hook.
func (p *Proxy) SetHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

// FailNext answers the next n object GETs with an S3 error document of the
// given HTTP status and code (e.g. 503 "SlowDown") instead of forwarding them.
func (p *Proxy) FailNext(n, status int, code string) {
	p.mu.Lock()
	p.failN, p.failCode, p.failS3 = n, status, code
	p.mu.Unlock()
}

// TruncateNext cuts the bodies of the next n successful object GETs after
// `after` bytes and drops the connection: the client sees a short body.
func (p *Proxy) TruncateNext(n int, after int64) {
	p.mu.Lock()
	p.truncN, p.truncAt = n, after
	p.mu.Unlock()
}

func isObjectGet(r *http.Request) bool {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	q := r.URL.Query()
	q.Del("x-id")
	return r.Method == http.MethodGet && bucket != "" && key != "" && len(q) == 0
}

func requestKey(r *http.Request) string {
	q := r.URL.Query()
	q.Del("x-id") // the SDK's operation marker, same for every GetObject
	k := r.Method + " " + r.URL.Path
	if len(q) > 0 {
		k += "?" + q.Encode()
	}
	if rg := r.Header.Get("Range"); rg != "" {
		k += " " + rg
	}
	return k
}

func (p *Proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	object := isObjectGet(r)
	p.mu.Lock()
	key := requestKey(r)
	p.counts[key]++
	if object {
		p.gets[key]++
	}
	hook := p.hook
	var failCode int
	var failS3 string
	var truncAt int64 = -1
	if object && p.failN > 0 {
		p.failN--
		failCode, failS3 = p.failCode, p.failS3
	} else if object && p.truncN > 0 {
		p.truncN--
		truncAt = p.truncAt
	}
	p.mu.Unlock()
	if object {
		for now, peak := p.getsNow.Add(1), p.getsPeak.Load(); now > peak && !p.getsPeak.CompareAndSwap(peak, now); peak = p.getsPeak.Load() {
		}
		defer p.getsNow.Add(-1)
	}

	if d := time.Duration(p.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if hook != nil && hook(w, r) {
		return
	}
	if failCode != 0 {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(failCode)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by s3test</Message></Error>`, failS3)
		return
	}
	rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p, ctx: r.Context(), object: object, limit: truncAt}, r)
}

// countingWriter counts, throttles and optionally truncates a response body.
type countingWriter struct {
	http.ResponseWriter
	p       *Proxy
	ctx     context.Context
	object  bool  // an object GET: count its bytes if the status is 2xx
	limit   int64 // truncate after this many body bytes; -1: never
	status  int
	written int64
}

var errTruncated = errors.New("s3test: body truncated on purpose")

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	done := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), 32<<10)]
		if w.limit >= 0 && w.status/100 == 2 {
			if w.written >= w.limit {
				// Push out what was written, so the client gets exactly
				// limit bytes, then break the connection.
				http.NewResponseController(w.ResponseWriter).Flush()
				return done, errTruncated
			}
			chunk = chunk[:min(int64(len(chunk)), w.limit-w.written)]
		}
		if err := w.p.wait(w.ctx, len(chunk)); err != nil {
			return done, err
		}
		n, err := w.ResponseWriter.Write(chunk)
		done += n
		w.written += int64(n)
		w.p.totalBytes.Add(int64(n))
		if w.object && w.status/100 == 2 {
			w.p.objectBytes.Add(int64(n))
		}
		if err != nil {
			return done, err
		}
		b = b[n:]
	}
	return done, nil
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wait blocks until n more bytes fit under the throttle. One schedule is
// shared by all responses, so the limit is on the proxy's total rate.
func (p *Proxy) wait(ctx context.Context, n int) error {
	bps := p.throttle.Load()
	if bps <= 0 {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(n) / float64(bps) * float64(time.Second)))
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
