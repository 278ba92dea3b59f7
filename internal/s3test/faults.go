package s3test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is one way the injector breaks an object GET.
type Fault int

const (
	FaultNone        Fault = iota
	Fault5xx               // 500 InternalError or 502 Bad Gateway (a load balancer's HTML page), in bursts
	FaultSlowDown          // 503 SlowDown
	FaultReset             // headers and part of the body, then a TCP RST (SO_LINGER 0)
	FaultTruncate          // headers and part of the body, then a clean close (FIN)
	FaultStall             // nothing, or headers and part of the body, then silence until the client hangs up
	FaultLongLength        // Content-Length claims more bytes than the range; the range is sent, then a close
	FaultShortLength       // Content-Length (and sometimes Content-Range) claims fewer bytes than asked; a clean, short answer
	FaultReplace           // the object is rewritten upstream half way through its body (see ReplaceNext)
	NumFaults
)

var faultNames = [NumFaults]string{"none", "5xx", "SlowDown", "reset", "truncate", "stall",
	"long Content-Length", "short Content-Length", "replace"}

func (f Fault) String() string {
	if f >= 0 && f < NumFaults {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// FaultConfig sets what Faults does.
type FaultConfig struct {
	// Seed of the decisions (which fault, where in the body, which variant).
	// Concurrent requests take decisions in the order they arrive, so a seed
	// reproduces the mix of faults, not which request got which.
	Seed uint64
	// Prob is the chance of each fault per object GET (FaultReplace is never
	// random); their sum must be below 1.
	Prob map[Fault]float64
	// MaxBurst: a 5xx fault also fails up to this many following object
	// GETs, whoever sends them, as a failing server would.
	MaxBurst int
	// StallFor is how long a stalled answer waits for the client to hang up
	// before the injector closes it (default 10s).
	StallFor time.Duration
}

// Faults answers object GETs through a Proxy (see Install) with injected
// failures. Every object GET goes through it, not only the failed ones, so
// a replacement (ReplaceNext) can wait until no GET is between its
// precondition check and the open of the file upstream: versitygw reads the
// ETag it checks If-Match against by path, then opens the file, so a PUT in
// between would serve new bytes under the old ETag. That race is the
// server's, not the client's, and S3 has no such window.
type Faults struct {
	upstream  *url.URL
	transport *http.Transport
	cfg       FaultConfig

	// opening is held for reading from a GET's start until its answer's
	// headers arrive (the file is open upstream by then), and for writing by
	// a replacement.
	opening sync.RWMutex

	mu        sync.Mutex
	rng       *rand.Rand
	burst     int // object GETs still to fail in the current 5xx burst
	burst502  bool
	queue     []Fault // forced faults for the next GETs
	replMatch func(bucket, key string) bool
	replFn    func(bucket, key string) error
	replErr   error

	gets     atomic.Int64
	injected [NumFaults]atomic.Int64
	failed   atomic.Int64 // see Unplanned
	history  []string     // "GET /bucket/key bytes=A-B: fault", oldest first (under mu)
}

// NewFaults returns an injector that forwards to upstream (the S3 server's
// endpoint, as given to NewCountingProxy). Install it on the proxy.
func NewFaults(upstream string, cfg FaultConfig) (*Faults, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("s3test: faults upstream %q: %w", upstream, err)
	}
	var sum float64
	for k, p := range cfg.Prob {
		if k <= FaultNone || k >= FaultReplace || p < 0 {
			return nil, fmt.Errorf("s3test: faults: probability %v for %s", p, k)
		}
		sum += p
	}
	if sum >= 1 {
		return nil, fmt.Errorf("s3test: faults: probabilities add up to %v, want < 1", sum)
	}
	if cfg.StallFor <= 0 {
		cfg.StallFor = 10 * time.Second
	}
	return &Faults{upstream: u, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}, nil
}

// Install makes p send every object GET through f (p's byte counts then
// leave those GETs out; its request counts still include them).
func (f *Faults) Install(p *Proxy) { p.SetHook(f.serve) }

// Gets is the number of object GETs seen.
func (f *Faults) Gets() int64 { return f.gets.Load() }

// Injected is how many times each fault was applied. A fault drawn for a
// GET whose upstream answer was an error (say 412 after a replacement) is
// not applied: that answer is passed on as it is.
func (f *Faults) Injected() map[Fault]int64 {
	m := map[Fault]int64{}
	for k := Fault5xx; k < NumFaults; k++ {
		if n := f.injected[k].Load(); n > 0 {
			m[k] = n
		}
	}
	return m
}

// Total is the number of faults applied.
func (f *Faults) Total() int64 {
	var n int64
	for k := Fault5xx; k < NumFaults; k++ {
		n += f.injected[k].Load()
	}
	return n
}

// Force makes the next object GETs get these faults, in order, before any
// random one, so a test can be sure each kind happens.
func (f *Faults) Force(kinds ...Fault) {
	f.mu.Lock()
	f.queue = append(f.queue, kinds...)
	f.mu.Unlock()
}

// ReplaceNext arms one replacement: the next successful object GET whose
// bucket and key match sends half its body, then replace (which should PUT
// other content under that key, straight to the server) runs while no other
// GET is being opened upstream, then the rest of the old body is sent.
func (f *Faults) ReplaceNext(match func(bucket, key string) bool, replace func(bucket, key string) error) {
	f.mu.Lock()
	f.replMatch, f.replFn = match, replace
	f.mu.Unlock()
}

// ReplaceErr returns the first error a replace function returned.
func (f *Faults) ReplaceErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replErr
}

// decision is what happens to one GET, drawn under f.mu.
type decision struct {
	fault   Fault
	status  int     // Fault5xx: 500 or 502
	cut     float64 // where in the body to break, as a fraction of it
	variant bool    // stall before the headers; short Content-Range too
	match   func(bucket, key string) bool
	replace func(bucket, key string) error
}

func (f *Faults) decide(bucket, key string) decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := decision{cut: f.rng.Float64(), variant: f.rng.IntN(4) == 0}
	if f.replFn != nil && f.replMatch(bucket, key) {
		d.fault, d.match, d.replace = FaultReplace, f.replMatch, f.replFn
		f.replFn, f.replMatch = nil, nil
		return d
	}
	switch {
	case len(f.queue) > 0:
		d.fault, f.queue = f.queue[0], f.queue[1:]
	case f.burst > 0:
		f.burst--
		d.fault, d.status = Fault5xx, f.burstStatus()
		return d
	default:
		x := f.rng.Float64()
		for k := Fault5xx; k < FaultReplace; k++ {
			if x < f.cfg.Prob[k] {
				d.fault = k
				break
			}
			x -= f.cfg.Prob[k]
		}
	}
	if d.fault == Fault5xx {
		f.burst502 = f.rng.IntN(2) == 0
		d.status = f.burstStatus()
		if f.cfg.MaxBurst > 0 {
			f.burst = f.rng.IntN(f.cfg.MaxBurst + 1)
		}
	}
	return d
}

// burstStatus is the status of every answer in the current 5xx burst.
func (f *Faults) burstStatus() int {
	if f.burst502 {
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func (f *Faults) serve(w http.ResponseWriter, r *http.Request) bool {
	if !isObjectGet(r) {
		return false
	}
	f.gets.Add(1)
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	d := f.decide(bucket, key)
	switch {
	case d.fault == Fault5xx && d.status == 502:
		f.applied(r, Fault5xx, "502")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
	case d.fault == Fault5xx:
		f.applied(r, Fault5xx, "500")
		s3Error(w, http.StatusInternalServerError, "InternalError")
	case d.fault == FaultSlowDown:
		f.applied(r, FaultSlowDown, "")
		s3Error(w, http.StatusServiceUnavailable, "SlowDown")
	case d.fault == FaultStall && d.variant:
		// Before the headers: the client's response header timeout.
		f.applied(r, FaultStall, "before the headers")
		f.stall(r.Context())
		hangUp(w, false, false)
	default:
		f.relay(w, r, d, bucket, key)
	}
	return true
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by s3test</Message></Error>`, code)
}

// relay forwards the GET upstream and passes the answer on, broken as d says.
func (f *Faults) relay(w http.ResponseWriter, r *http.Request, d decision, bucket, key string) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = f.upstream.Scheme, f.upstream.Host
	out.Host = r.Host // signed by the client
	f.opening.RLock()
	resp, err := f.transport.RoundTrip(out)
	f.opening.RUnlock()
	if err != nil {
		f.unplanned(r, "upstream: "+err.Error())
		if r.Context().Err() == nil {
			http.Error(w, "s3test: upstream: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	n := resp.ContentLength
	if d.fault == FaultNone || resp.StatusCode/100 != 2 || n <= 0 {
		if d.fault == FaultReplace { // not applied: keep it armed
			f.ReplaceNext(d.match, d.replace)
		}
		f.applied(r, FaultNone, resp.Status)
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		if _, err := io.Copy(w, resp.Body); err != nil {
			f.unplanned(r, "body: "+err.Error())
		}
		return
	}
	k := int64(d.cut * float64(n)) // bytes sent before the fault, < n
	f.applied(r, d.fault, fmt.Sprintf("after %d of %d bytes", k, n))
	h := w.Header()
	copyHeader(h, resp.Header)
	switch d.fault {
	case FaultLongLength:
		h.Set("Content-Length", strconv.FormatInt(n+1+k, 10))
		k = n
	case FaultShortLength:
		h.Set("Content-Length", strconv.FormatInt(k, 10))
		if cr := h.Get("Content-Range"); d.variant && k > 0 {
			if from, total, ok := parseContentRange(cr); ok {
				h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, from+k-1, total))
			}
		}
	case FaultReplace:
		k = n / 2
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.CopyN(w, resp.Body, k); err != nil {
		return
	}
	http.NewResponseController(w).Flush()
	switch d.fault {
	case FaultReset, FaultTruncate:
		hangUp(w, true, d.fault == FaultReset)
	case FaultStall:
		f.stall(r.Context())
		hangUp(w, true, false)
	case FaultReplace:
		f.opening.Lock()
		err := d.replace(bucket, key)
		f.opening.Unlock()
		if err != nil {
			f.mu.Lock()
			if f.replErr == nil {
				f.replErr = fmt.Errorf("s3test: replace %s/%s: %w", bucket, key, err)
			}
			f.mu.Unlock()
		}
		io.Copy(w, resp.Body) // the old version: upstream has the old file open
	}
	// FaultLongLength and FaultShortLength end here: net/http closes a
	// connection whose body is shorter than its Content-Length.
}

// applied counts fault k (unless FaultNone) and notes it in the history.
func (f *Faults) applied(r *http.Request, k Fault, how string) {
	if k != FaultNone {
		f.injected[k].Add(1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.history) < 100_000 {
		f.history = append(f.history, fmt.Sprintf("%s %s %s: %s %s", r.Method, r.URL.Path, r.Header.Get("Range"), k, how))
	}
}

// unplanned counts a GET that failed without an injected fault: the client
// gave up first (its own timeout on a slow answer, or its run stopped), or
// the upstream request failed.
func (f *Faults) unplanned(r *http.Request, why string) {
	f.failed.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.history) < 100_000 {
		f.history = append(f.history, fmt.Sprintf("%s %s %s: unplanned failure (%s)", r.Method, r.URL.Path, r.Header.Get("Range"), why))
	}
}

// Unplanned is the number of GETs that failed without an injected fault
// (see unplanned): a test that bounds requests by faults must allow them.
func (f *Faults) Unplanned() int64 { return f.failed.Load() }

// History lists what happened to each object GET, from the i-th on (the
// first 100,000 are kept): "GET /bucket/key bytes=A-B: fault detail".
func (f *Faults) History(i int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.history[min(i, len(f.history)):])
}

// stall waits until the client hangs up or StallFor passes.
func (f *Faults) stall(ctx context.Context) {
	t := time.NewTimer(f.cfg.StallFor)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// hangUp closes the connection under the response, after pushing out what
// was written if flush (never before the headers: a flush would send them).
// With reset, SO_LINGER 0 makes the close a RST, so the client reads
// ECONNRESET instead of an early EOF.
func hangUp(w http.ResponseWriter, flush, reset bool) {
	rc := http.NewResponseController(w)
	if flush {
		rc.Flush()
	}
	conn, buf, err := rc.Hijack()
	if err != nil {
		return
	}
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	conn.Close()
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
}

// parseContentRange reads "bytes FROM-TO/TOTAL".
func parseContentRange(cr string) (from, total int64, ok bool) {
	spec, tot, ok1 := strings.Cut(strings.TrimPrefix(cr, "bytes "), "/")
	first, _, ok2 := strings.Cut(spec, "-")
	from, err1 := strconv.ParseInt(first, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return from, total, ok1 && ok2 && err1 == nil && err2 == nil
}
