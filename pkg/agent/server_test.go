package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// stuckFetcher lists for ever (until the agent closes), so an ensure waits
// its whole waitSeconds: a long poll with no S3 server.
type stuckFetcher struct{}

func (stuckFetcher) List(ctx context.Context, _ model.Ref, _ *model.Credentials) (*model.Manifest, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (stuckFetcher) Fetch(ctx context.Context, _ model.Ref, _ *model.Credentials, _ *model.Manifest, _ fetch.Store, _ fetch.Progress) (*model.Manifest, fetch.Stats, error) {
	return nil, fetch.Stats{}, errors.New("stuckFetcher does not fetch")
}

func (stuckFetcher) AllowedIn(model.Ref, string) error { return nil }

func (stuckFetcher) CheckAccess(context.Context, model.Ref, *model.Credentials) error { return nil }

// serveStuck serves an agent over stuckFetcher on a socket with opts.
func serveStuck(t *testing.T, opts ...agent.ServeOption) (sock string, client *agentapi.Client) {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, stuckFetcher{}, nil, nil)
	sock = filepath.Join(t.TempDir(), "agent.sock")
	l, err := agent.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l, opts...); close(done) }()
	client = agentapi.NewClient(sock)
	t.Cleanup(func() { client.CloseIdleConnections(); cancel(); <-done; a.Close(); store.Close() })
	return sock, client
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// The issue this guards against: 200 clients that connected and sent
// nothing (or half a request) held 200 fds in the agent for ever.
func TestServerClosesStalledConnections(t *testing.T) {
	const timeout = 200 * time.Millisecond
	sock, client := serveStuck(t, agent.WithTimeouts(timeout, timeout, timeout))
	if _, err := client.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	time.Sleep(50 * time.Millisecond) // let the server side of that connection go
	base := openFDs(t)

	// Silent, a header cut short, a body cut short, and a finished request
	// left open: each must be closed by the server, not by the client.
	stalls := []string{
		"",
		"GET /v1/status HTTP/1.1\r\nHost: agent\r\n",
		"POST /v1/pin HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ref\":",
		"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
	}
	const n = 52
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, stalls[i%len(stalls)]); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	start := time.Now()

	// A normal request is served while they stall.
	if _, err := client.Status(context.Background()); err != nil {
		t.Fatalf("status while %d connections stall: %v", n, err)
	}
	client.CloseIdleConnections()

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := io.Copy(io.Discard, c) // nil at EOF
			errs[i] = err
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		// ECONNRESET: the server closed with our half-sent request unread.
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("connection %d (%q): %v, want it closed by the server", i, stalls[i%len(stalls)], err)
		}
	}
	if took > 2*time.Second {
		t.Errorf("stalled connections closed after %v, want about %v", took, timeout)
	}

	// Only our ends of the connections are left; then nothing.
	if got := openFDs(t); got > base+n+2 {
		t.Errorf("%d fds open with our %d ends still open, want at most %d: the server kept its ends", got, n, base+n+2)
	}
	for _, c := range conns {
		c.Close()
	}
	if got := openFDs(t); got > base+2 {
		t.Errorf("%d fds open after closing, %d before the stalled connections", got, base)
	}
}

// The read deadline is lifted once the body is in: a long poll and a watch
// stream last their whole waitSeconds, well past the timeouts.
func TestServerTimeoutsSpareLongPolls(t *testing.T) {
	const timeout = 100 * time.Millisecond
	_, client := serveStuck(t, agent.WithTimeouts(timeout, timeout, timeout))
	const wait = 800 * time.Millisecond

	start := time.Now()
	p, err := client.Ensure(context.Background(), "s3://models/slow", agentapi.EnsureOptions{Wait: wait}, nil)
	if err != nil || p.State == agentapi.StateReady || p.State == agentapi.StateFailed {
		t.Fatalf("long poll: %+v, %v", p, err)
	}
	if took := time.Since(start); took < wait-50*time.Millisecond {
		t.Fatalf("long poll answered after %v, want its wait of %v", took, wait)
	}

	start = time.Now()
	lines := 0
	p, err = client.Ensure(context.Background(), "s3://models/slow", agentapi.EnsureOptions{Wait: wait}, func(agentapi.Progress) { lines++ })
	if err != nil || p.State == agentapi.StateReady || p.State == agentapi.StateFailed {
		t.Fatalf("watch: %+v, %v", p, err)
	}
	if took := time.Since(start); took < wait-50*time.Millisecond || lines < 2 {
		t.Fatalf("watch ended after %v with %d progress lines, want %v and a line every 250ms", took, lines, wait)
	}
}

// Connections past the limit wait for a slot instead of being served.
func TestServerMaxConns(t *testing.T) {
	const timeout = 300 * time.Millisecond
	sock, client := serveStuck(t, agent.WithTimeouts(timeout, timeout, timeout), agent.WithMaxConns(2))
	for range 2 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond) // both accepted
	start := time.Now()
	if _, err := client.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < timeout-100*time.Millisecond {
		t.Fatalf("a third connection was served after %v, before the two stalled ones timed out", took)
	}
}
