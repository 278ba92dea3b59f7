package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
)

// env is a real agent on a real socket over a real S3 server, with a
// counting proxy in between.
type env struct {
	srv    *s3test.Server
	proxy  *s3test.Proxy
	store  *cache.Store
	agent  *agent.Agent
	client *agentapi.Client
	root   string
	socket string
}

func newEnv(t *testing.T, capacity int64) *env {
	t.Helper()
	srv := s3test.Start(t)
	proxy := s3test.NewCountingProxy(t, srv.Endpoint)
	root := t.TempDir()
	store, err := cache.Open(root, cache.Options{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	src := fetch.Source{Endpoint: proxy.URL(), Region: srv.Region, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
	bad := src
	bad.SecretAccessKey = "wrong-secret"
	closed := src
	closed.Endpoint = "http://127.0.0.1:1"
	f, err := fetch.New(map[string]fetch.Source{"test": src, "badcreds": bad, "closed": closed}, fetch.WithPartSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, f, nil, nil)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := agent.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done; a.Close(); store.Close() })
	return &env{srv: srv, proxy: proxy, store: store, agent: a, client: agentapi.NewClient(sock), root: root, socket: sock}
}

func TestConcurrentEnsuresDownloadOnce(t *testing.T) {
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	big := s3test.RandomBytes(1, 40<<20)
	e.srv.Put(t, "models", "m/weights.bin", big)
	e.srv.Put(t, "models", "m/config.json", []byte(`{"a":1}`))
	ref := "s3://models/m?source=test"

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	paths := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.client.Ensure(context.Background(), ref, agentapi.EnsureOptions{Wait: time.Minute}, nil)
			if err == nil && p.State != agentapi.StateReady {
				err = fmt.Errorf("state %s", p.State)
			}
			errs <- err
			paths <- p.Path
		}()
	}
	wg.Wait()
	close(errs)
	close(paths)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var path string
	for p := range paths {
		if path != "" && p != path {
			t.Fatalf("callers got different trees: %s %s", p, path)
		}
		path = p
	}
	got, err := os.ReadFile(filepath.Join(path, "weights.bin"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("weights differ after download (%v)", err)
	}
	// Each byte range was asked for exactly once, and no more bytes than the model.
	for key, n := range e.proxy.GetCounts() {
		if n != 1 {
			t.Errorf("%s requested %d times", key, n)
		}
	}
	if sent := e.proxy.BytesSent(); sent != int64(len(big))+7 {
		t.Errorf("server sent %d bytes, model is %d", sent, len(big)+7)
	}
}

func TestBadInputGivesClearErrors(t *testing.T) {
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	e.srv.Put(t, "models", "m/a", []byte("x"))
	ctx := context.Background()
	cases := []struct {
		ref   string
		class error
		frag  string
	}{
		{"s3://models/m?source=nope", agentapi.ErrInvalid, "nope"},
		{"not-a-ref", agentapi.ErrInvalid, "s3://"},
		{"s3://models/a/../../etc", agentapi.ErrInvalid, ".."},
		{"s3://nobucket/m?source=test", agentapi.ErrNotFound, "nobucket"},
		{"s3://models/missing?source=test", agentapi.ErrNotFound, "missing"},
		{"s3://models/m?source=badcreds", agentapi.ErrAccessDenied, ""},
		{"s3://models/m?source=closed", agentapi.ErrUnreachable, "127.0.0.1:1"},
	}
	for _, c := range cases {
		start := time.Now()
		_, err := e.client.Ensure(ctx, c.ref, agentapi.EnsureOptions{Wait: time.Minute}, nil)
		if !errors.Is(err, c.class) || !strings.Contains(err.Error(), c.frag) {
			t.Errorf("%s: got %v; want %v mentioning %q", c.ref, err, c.class, c.frag)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("%s: took %s to fail", c.ref, time.Since(start))
		}
	}
}

func TestModelLargerThanCapacityFailsCleanly(t *testing.T) {
	e := newEnv(t, 16<<20)
	e.srv.CreateBucket(t, "models")
	e.srv.Put(t, "models", "huge/w.bin", s3test.RandomBytes(2, 20<<20))
	_, err := e.client.Ensure(context.Background(), "s3://models/huge?source=test", agentapi.EnsureOptions{Wait: time.Minute}, nil)
	if !errors.Is(err, agentapi.ErrNoSpace) || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("got %v; want ErrNoSpace naming the capacity", err)
	}
	if left, _ := os.ReadDir(filepath.Join(e.root, "ingest")); len(left) != 0 {
		t.Fatalf("ingest garbage: %v", left)
	}
	if e.proxy.BytesSent() > 64<<10 {
		t.Fatalf("downloaded %d bytes of a model that cannot fit", e.proxy.BytesSent())
	}
}

func TestPinEvictAndRevisions(t *testing.T) {
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	shared := s3test.RandomBytes(3, 9<<20)
	e.srv.Put(t, "models", "m/shared.bin", shared)
	e.srv.Put(t, "models", "m/config.json", []byte("v1"))
	ctx := context.Background()
	ref := "s3://models/m?source=test"
	p1, err := e.client.Ensure(ctx, ref, agentapi.EnsureOptions{Wait: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second ensure is a hit without any request to S3.
	before := e.proxy.Requests()
	if p, err := e.client.Ensure(ctx, ref, agentapi.EnsureOptions{}, nil); err != nil || !p.Hit {
		t.Fatalf("second ensure: %+v %v", p, err)
	}
	if e.proxy.Requests() != before {
		t.Fatal("a cache hit talked to S3")
	}
	pin, err := e.client.Pin(ctx, ref, "vol-1")
	if err != nil || pin.Revision != p1.Revision {
		t.Fatalf("pin: %+v %v", pin, err)
	}
	// New revision: only the changed file is fetched.
	e.srv.Put(t, "models", "m/config.json", []byte("v2"))
	sent := e.proxy.BytesSent()
	p2, err := e.client.Ensure(ctx, ref, agentapi.EnsureOptions{Refresh: true, Wait: time.Minute}, nil)
	if err != nil || p2.Revision == p1.Revision {
		t.Fatalf("refresh: %+v %v", p2, err)
	}
	if got := e.proxy.BytesSent() - sent; got != 2 {
		t.Fatalf("second revision fetched %d bytes, want 2", got)
	}
	st, err := e.client.Status(ctx)
	if err != nil || len(st.Models) != 2 || st.SavedBytes != int64(len(shared)) {
		t.Fatalf("status: %+v %v", st, err)
	}
	// Evicting the ref keeps the pinned revision and says who holds it.
	_, err = e.client.Evict(ctx, ref)
	if !errors.Is(err, agentapi.ErrPinned) || !strings.Contains(err.Error(), "vol-1") || !strings.Contains(err.Error(), "evicted "+p2.Revision) {
		t.Fatalf("evict: %v", err)
	}
	if _, err := os.Stat(p2.Path); !os.IsNotExist(err) {
		t.Fatalf("unpinned revision not evicted: %v", err)
	}
	if _, err := os.Stat(p1.Path); err != nil {
		t.Fatalf("pinned revision evicted: %v", err)
	}
	if err := e.client.Unpin(ctx, ref, "vol-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Unpin(ctx, ref, "vol-1"); err != nil {
		t.Fatalf("second unpin not idempotent: %v", err)
	}
	if _, err := e.client.Evict(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1.Path); !os.IsNotExist(err) {
		t.Fatalf("evicted tree still present: %v", err)
	}
}

func TestAPIRefusesMalformedRequests(t *testing.T) {
	e := newEnv(t, 1<<20)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
	}}}
	for _, body := range []string{
		`{"ref":"s3://models/m","bogus":1}`,
		`{"ref":`,
		`{"ref":"s3://models/m"} {"ref":"s3://models/n"}`,
		`{"ref":"s3://models/m","waitSeconds":-1}`,
		`{"ref":"` + strings.Repeat("a", 100<<10) + `"}`,
		`[]`,
	} {
		resp, err := hc.Post("http://agent/v1/ensure", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error, Class string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Class != "invalid" || e.Error == "" {
			t.Errorf("body %.40q: status %d class %q error %q", body, resp.StatusCode, e.Class, e.Error)
		}
	}
	fi, err := os.Stat(e.socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v (%v), want 0660", fi.Mode(), err)
	}
	// Only root (and the socket's group) may drive the agent.
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Geteuid()) {
		t.Fatalf("socket owned by uid %d, want the agent's uid %d", st.Uid, os.Geteuid())
	}
}

// While a model downloads, status reports a real rate and an ETA, and the
// message kubelet turns into a pod event carries no percent sign.
func TestProgressWhileDownloading(t *testing.T) {
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	e.srv.Put(t, "models", "slow/weights.bin", s3test.RandomBytes(2, 24<<20))
	e.proxy.SetThrottle(8 << 20)
	ref := "s3://models/slow?source=test"
	if _, err := e.client.Ensure(context.Background(), ref, agentapi.EnsureOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := e.client.Ensure(context.Background(), ref, agentapi.EnsureOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.State == agentapi.StateReady {
			t.Fatalf("model ready before any in-flight progress showed a rate: %+v", p)
		}
		if p.State == agentapi.StateFetching && p.FetchedBytes > 0 {
			if p.BytesPerSecond <= 0 || p.ETASeconds <= 0 {
				t.Fatalf("fetched %d bytes but rate %.0f B/s, eta %.1fs", p.FetchedBytes, p.BytesPerSecond, p.ETASeconds)
			}
			msg := p.Message()
			if strings.Contains(msg, "%") || strings.Contains(msg, "eta ?") || !strings.Contains(msg, " pct, ") {
				t.Fatalf("message %q", msg)
			}
			t.Logf("in flight: %s", msg)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fetched bytes reported in 30s: %+v", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.proxy.SetThrottle(0)
	if _, err := e.client.Ensure(context.Background(), ref, agentapi.EnsureOptions{Wait: time.Minute}, nil); err != nil {
		t.Fatal(err)
	}
}
