package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/net/netutil"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

const maxRequestBytes = 64 << 10

// maxWait caps a request's wait so a client cannot park handlers forever.
const maxWait = time.Hour

// Handler serves the API: POST /v1/ensure, /v1/pin, /v1/unpin, /v1/evict,
// /v1/verify; GET /v1/status, /healthz.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ensure", a.handleEnsure)
	mux.HandleFunc("POST /v1/pin", func(w http.ResponseWriter, r *http.Request) {
		var req agentapi.PinRequest
		ref, ok := decodeRef(w, r, &req, func() string { return req.Ref })
		if !ok {
			return
		}
		if req.Holder == "" {
			writeError(w, fmt.Errorf("%w: pin needs a holder", agentapi.ErrInvalid))
			return
		}
		m, err := a.Pin(ref, req.Holder)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, agentapi.PinResponse{Ref: m.Ref.String(), Revision: m.Revision, Path: m.Path, Size: m.Size})
	})
	mux.HandleFunc("POST /v1/unpin", func(w http.ResponseWriter, r *http.Request) {
		var req agentapi.PinRequest
		ref, ok := decodeRef(w, r, &req, func() string { return req.Ref })
		if !ok {
			return
		}
		if req.Holder == "" {
			writeError(w, fmt.Errorf("%w: unpin needs a holder", agentapi.ErrInvalid))
			return
		}
		if err := a.Unpin(ref, req.Holder); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /v1/evict", func(w http.ResponseWriter, r *http.Request) {
		var req agentapi.EvictRequest
		ref, ok := decodeRef(w, r, &req, func() string { return req.Ref })
		if !ok {
			return
		}
		ev, err := a.Evict(ref)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, agentapi.EvictResponse{Evicted: ev})
	})
	mux.HandleFunc("POST /v1/verify", func(w http.ResponseWriter, r *http.Request) {
		rep, err := a.Verify(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(a.store.Root()); err != nil {
			http.Error(w, "cache directory: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

func (a *Agent) handleEnsure(w http.ResponseWriter, r *http.Request) {
	var req agentapi.EnsureRequest
	ref, ok := decodeRef(w, r, &req, func() string { return req.Ref })
	if !ok {
		return
	}
	if req.WaitSeconds < 0 || req.WaitSeconds > maxWait.Seconds() {
		writeError(w, fmt.Errorf("%w: waitSeconds %v out of range [0, %v]", agentapi.ErrInvalid, req.WaitSeconds, maxWait.Seconds()))
		return
	}
	opts := agentapi.EnsureOptions{Refresh: req.Refresh, Wait: time.Duration(req.WaitSeconds * float64(time.Second)), Access: req.Access,
		WarmPageCache: req.WarmPageCache}
	if !req.Watch {
		p, err := a.Ensure(r.Context(), ref, opts)
		if err != nil {
			writeError(w, err)
			return
		}
		status := http.StatusOK
		if p.State != agentapi.StateReady {
			status = http.StatusAccepted
		}
		writeJSON(w, status, p)
		return
	}
	// Streaming: one JSON object per line; errors travel inside the last one
	// because the status line is already sent.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func(p agentapi.Progress) {
		enc.Encode(p)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	p, _ := a.EnsureWatch(r.Context(), ref, opts, 250*time.Millisecond, flush)
	flush(p)
}

// decodeRef reads a JSON body into req (unknown fields refused, size
// bounded) and parses the ref it carries; on failure it answers 400.
func decodeRef(w http.ResponseWriter, r *http.Request, req any, refOf func() string) (model.Ref, bool) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		writeError(w, fmt.Errorf("%w: request body: %v", agentapi.ErrInvalid, err))
		return model.Ref{}, false
	}
	if dec.More() {
		writeError(w, fmt.Errorf("%w: request body: trailing data", agentapi.ErrInvalid))
		return model.Ref{}, false
	}
	ref, err := model.ParseRef(refOf())
	if err != nil {
		writeError(w, err)
		return model.Ref{}, false
	}
	return ref, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	c := Classify(err)
	writeJSON(w, agentapi.HTTPStatus(c), agentapi.ErrorResponse{Error: err.Error(), Class: c})
}

// ListenUnix listens on a unix socket at path, replacing a stale socket a
// crashed agent left, with mode 0660 so only root and the socket's group
// (the CSI plugin) can drive the cache.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent: socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("agent: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("agent: another agent is serving on %s", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("agent: chmod socket: %w", err)
	}
	return l, nil
}

// Defaults of the socket server's limits. Every connection holds an fd and
// a goroutine, so a client that stalls or idles must not hold one for ever.
// There is no write timeout: long polls (waitSeconds, up to maxWait) and
// watch streams answer late by design, and their handlers bound themselves.
const (
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds header and body together; bodies are at
	// most maxRequestBytes.
	DefaultReadTimeout = 20 * time.Second
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConns is well above what the plugin and the CLI open at
	// once (a few per publishing volume); more connections wait in the
	// listen backlog instead of being served.
	DefaultMaxConns = 256
)

// ServeOption tunes Serve.
type ServeOption func(*serveConfig)

type serveConfig struct {
	header, read, idle time.Duration
	maxConns           int
}

// WithTimeouts sets how long a connection may take to send a request's
// header, to send the whole request (header and body), and how long it may
// stay open between requests. A zero keeps the default.
func WithTimeouts(header, read, idle time.Duration) ServeOption {
	return func(c *serveConfig) {
		c.header = cmp.Or(header, c.header)
		c.read = cmp.Or(read, c.read)
		c.idle = cmp.Or(idle, c.idle)
	}
}

// WithMaxConns bounds the connections served at once (0 keeps the default).
func WithMaxConns(n int) ServeOption {
	return func(c *serveConfig) { c.maxConns = cmp.Or(n, c.maxConns) }
}

// Serve serves the API on l until ctx ends, then shuts down gracefully.
func (a *Agent) Serve(ctx context.Context, l net.Listener, opts ...ServeOption) error {
	c := serveConfig{header: DefaultHeaderTimeout, read: DefaultReadTimeout, idle: DefaultIdleTimeout, maxConns: DefaultMaxConns}
	for _, o := range opts {
		o(&c)
	}
	// ReadTimeout does not cut long polls: net/http lifts the read deadline
	// once the body is read (handlers read it to EOF in decodeRef), and only
	// then watches the connection for the client leaving.
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: c.header, ReadTimeout: c.read, IdleTimeout: c.idle}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(netutil.LimitListener(l, c.maxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent: serve API: %w", err)
	}
	return nil
}
