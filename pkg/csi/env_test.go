package csi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
	"github.com/modelcache/modelcache/pkg/fetch"
)

// env is a real node: versitygw behind a counting proxy, a cache agent on a
// unix socket, and the CSI plugin with the real mounter on another.
type env struct {
	t        *testing.T
	srv      *s3test.Server
	proxy    *s3test.Proxy
	dir      string // short base for sockets and state
	cacheDir string
	agentSk  string
	stateDir string
	csiSk    string
	client   *agentapi.Client

	stopAgent  func()
	stopPlugin func()
	driver     *csi.Driver
	conn       *grpc.ClientConn
	node       csipb.NodeClient
	identity   csipb.IdentityClient
	controller csipb.ControllerClient
	wait       time.Duration
	extra      map[string]fetch.Source
	logs       logBuffer    // the plugin's and the agent's
	s3http     *http.Client // the agent's, to S3
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("MODELCACHE_REQUIRE") == "1" {
			t.Fatal("CSI tests bind-mount and need root (MODELCACHE_REQUIRE=1)")
		}
		t.Skip("CSI tests bind-mount and need root")
	}
}

func newEnv(t *testing.T, publishWait time.Duration) *env {
	t.Helper()
	needRoot(t)
	return newEnvOn(t, s3test.Start(t), publishWait, nil)
}

// newEnvOn is newEnv over srv, with extra named sources in the agent
// (their endpoint is set to the proxy's).
func newEnvOn(t *testing.T, srv *s3test.Server, publishWait time.Duration, extra map[string]fetch.Source) *env {
	t.Helper()
	needRoot(t)
	dir, err := os.MkdirTemp("", "mc-csi-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, proxy: s3test.NewCountingProxy(t, srv.Endpoint), dir: dir,
		cacheDir: filepath.Join(dir, "cache"), agentSk: filepath.Join(dir, "agent.sock"),
		stateDir: filepath.Join(dir, "state"), csiSk: filepath.Join(dir, "csi.sock"), wait: publishWait, extra: extra}
	e.client = agentapi.NewClient(e.agentSk)
	t.Cleanup(func() {
		if e.stopPlugin != nil {
			e.stopPlugin()
		}
		if e.stopAgent != nil {
			e.stopAgent()
		}
		// Whatever a failed test left mounted must not outlive it.
		filepath.WalkDir(filepath.Join(dir, "pods"), func(p string, d os.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				mounter.New().Unmount(p)
			}
			return nil
		})
		os.RemoveAll(dir)
	})
	srv.CreateBucket(t, "models")
	e.startAgent()
	e.startPlugin()
	return e
}

func (e *env) source() fetch.Source {
	return fetch.Source{Endpoint: e.proxy.URL(), Region: e.srv.Region, PathStyle: true,
		AccessKeyID: e.srv.AccessKey, SecretAccessKey: e.srv.SecretKey}
}

func (e *env) startAgent() {
	t := e.t
	store, err := cache.Open(e.cacheDir, cache.Options{Capacity: 2 << 30})
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]fetch.Source{"test": e.source()}
	for name, src := range e.extra {
		src.Endpoint, src.PathStyle = e.proxy.URL(), true
		sources[name] = src
	}
	// The test's own HTTP client, so settle can close its idle connections.
	e.s3http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	f, err := fetch.New(sources, fetch.WithPartSize(8<<20), fetch.WithHTTPClient(e.s3http),
		fetch.WithAllowedEndpoints([]string{e.proxy.URL()}))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, f, slog.New(slog.NewTextHandler(testWriter{t, &e.logs}, nil)), nil)
	l, err := agent.ListenUnix(e.agentSk)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l); close(done) }()
	e.stopAgent = func() { cancel(); <-done; a.Close(); store.Close(); e.stopAgent = nil }
}

func (e *env) startPlugin() {
	t := e.t
	log := slog.New(slog.NewTextHandler(testWriter{t, &e.logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := csi.New(csi.Options{NodeID: "node-1", Node: true, Controller: true, Agent: e.client,
		Mounter: mounter.New(), StateDir: e.stateDir, CacheDir: e.cacheDir, PublishWait: e.wait, Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, "unix://"+e.csiSk) }()
	conn, err := grpc.NewClient("unix://"+e.csiSk, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.driver, e.conn = d, conn
	e.node, e.identity, e.controller = csipb.NewNodeClient(conn), csipb.NewIdentityClient(conn), csipb.NewControllerClient(conn)
	waitFor(t, 10*time.Second, func() bool {
		c, err := net.Dial("unix", e.csiSk)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	e.stopPlugin = func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plugin Serve: %v", err)
		}
		e.stopPlugin = nil
	}
}

// target returns a kubelet-like target path for a volume.
func (e *env) target(vol string) string {
	return filepath.Join(e.dir, "pods", vol, "mount")
}

func (e *env) ref(name string) string { return "s3://models/" + name + "?source=test" }

func mountCap(mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func (e *env) publishReq(vol, ref string) *csipb.NodePublishVolumeRequest {
	return &csipb.NodePublishVolumeRequest{VolumeId: vol, TargetPath: e.target(vol), Readonly: true,
		VolumeCapability: mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		VolumeContext: map[string]string{"model": ref, "csi.storage.k8s.io/ephemeral": "true",
			"csi.storage.k8s.io/pod.name": "pod-" + vol, "csi.storage.k8s.io/pod.namespace": "ns"}}
}

func (e *env) publish(vol, ref string) error {
	_, err := e.node.NodePublishVolume(context.Background(), e.publishReq(vol, ref))
	return err
}

func (e *env) unpublish(vol string) error {
	_, err := e.node.NodeUnpublishVolume(context.Background(),
		&csipb.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: e.target(vol)})
	return err
}

// pins returns the holders of every revision of every model.
func (e *env) pins() []string {
	st, err := e.client.Status(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, m := range st.Models {
		out = append(out, m.Pins...)
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testWriter sends log lines to the test's log and keeps them in logs, so a
// test can check what the plugin and the agent wrote.
type testWriter struct {
	t    *testing.T
	logs *logBuffer
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	w.logs.mu.Lock()
	w.logs.b.Write(p)
	w.logs.mu.Unlock()
	return len(p), nil
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
