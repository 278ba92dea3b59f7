package registration

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	regapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const driver = "modelcache.csi.io"

// kubeletDir returns a short, not-yet-created kubelet root: t.TempDir paths
// carry the test name and can push the socket past the 108-byte sun_path limit.
func kubeletDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "kubelet") // non-default and absent: Run must create plugins_registry
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newServer(t *testing.T, dir, endpoint string) *Server {
	t.Helper()
	s, err := New(Config{
		DriverName: driver,
		Endpoint:   endpoint,
		KubeletDir: dir,
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs s until the returned stop is called; stop returns Run's error.
func start(t *testing.T, s *Server) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped bool
	var runErr error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitServing waits until the socket at path answers GetInfo with endpoint,
// so a stale or predecessor's socket at the same path does not count.
func waitServing(t *testing.T, path, endpoint string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		// A fresh connection each try: a reused one would sit in gRPC's
		// reconnect backoff after hitting the stale socket.
		cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := regapi.NewRegistrationClient(cc).GetInfo(ctx, &regapi.InfoRequest{})
		cancel()
		cc.Close()
		if err == nil && info.Endpoint == endpoint {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("socket %s not serving endpoint %s", path, endpoint)
}

// dialKubelet connects the way kubelet's plugin watcher does.
func dialKubelet(t *testing.T, path string) regapi.RegistrationClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return regapi.NewRegistrationClient(cc)
}

func rpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestGetInfoAndNotifyStatus(t *testing.T) {
	dir := kubeletDir(t)
	s := newServer(t, dir, "unix:///var/lib/kubelet/plugins/modelcache.csi.io/csi.sock")
	want := filepath.Join(dir, "plugins_registry", driver+"-reg.sock")
	if s.SocketPath() != want {
		t.Fatalf("SocketPath = %q, want %q", s.SocketPath(), want)
	}
	stop := start(t, s)
	waitServing(t, want, "/var/lib/kubelet/plugins/modelcache.csi.io/csi.sock")
	c := dialKubelet(t, want)
	ctx := rpcCtx(t)

	info, err := c.GetInfo(ctx, &regapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if info.Type != regapi.CSIPlugin || info.Name != driver ||
		info.Endpoint != "/var/lib/kubelet/plugins/modelcache.csi.io/csi.sock" ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Fatalf("GetInfo = %+v", info)
	}
	if st := s.Status(); st.Registered || st.Err != nil || !st.At.IsZero() {
		t.Fatalf("Status before notify = %+v", st)
	}

	if _, err := c.NotifyRegistrationStatus(ctx, &regapi.RegistrationStatus{PluginRegistered: false, Error: "driver name collides"}); err != nil {
		t.Fatalf("Notify(false): %v", err)
	}
	st := s.Status()
	if st.Registered || !errors.Is(st.Err, ErrRejected) || !strings.Contains(st.Err.Error(), "driver name collides") || st.At.IsZero() {
		t.Fatalf("Status after failure = %+v", st)
	}

	// Kubelet retries; a later success clears the error.
	if _, err := c.NotifyRegistrationStatus(ctx, &regapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("Notify(true): %v", err)
	}
	if st := s.Status(); !st.Registered || st.Err != nil {
		t.Fatalf("Status after success = %+v", st)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(want); !os.IsNotExist(err) {
		t.Fatalf("socket still present after cancel: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	dir := kubeletDir(t)
	sock := filepath.Join(dir, "plugins_registry", driver+"-reg.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}
	// A crashed instance leaves a socket file nobody listens on.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	s := newServer(t, dir, "/csi/csi.sock")
	stop := start(t, s)
	waitServing(t, sock, "/csi/csi.sock")
	if _, err := dialKubelet(t, sock).GetInfo(rpcCtx(t), &regapi.InfoRequest{}); err != nil {
		t.Fatalf("GetInfo on replaced socket: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket still present after cancel: %v", err)
	}
}

// A plugin restart: the new instance's socket is a new file (kubelet sees a
// create event and registers again) and its status starts unregistered.
func TestRestartRegistersAgain(t *testing.T) {
	dir := kubeletDir(t)
	first := newServer(t, dir, "/csi/csi.sock")
	stop := start(t, first)
	waitServing(t, first.SocketPath(), "/csi/csi.sock")
	if _, err := dialKubelet(t, first.SocketPath()).NotifyRegistrationStatus(rpcCtx(t), &regapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}

	second := newServer(t, dir, "/csi/csi.sock")
	stop2 := start(t, second)
	waitServing(t, second.SocketPath(), "/csi/csi.sock")
	if st := second.Status(); st.Registered {
		t.Fatalf("fresh instance reports registered before kubelet confirmed: %+v", st)
	}
	c := dialKubelet(t, second.SocketPath())
	if _, err := c.GetInfo(rpcCtx(t), &regapi.InfoRequest{}); err != nil {
		t.Fatalf("GetInfo after restart: %v", err)
	}
	if _, err := c.NotifyRegistrationStatus(rpcCtx(t), &regapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if !second.Status().Registered {
		t.Fatal("not registered after restart")
	}
	if err := stop2(); err != nil {
		t.Fatalf("second Run: %v", err)
	}
}

// In a surge rollout the old pod can exit after the new one started: it must
// not delete the new instance's socket, or kubelet deregisters the driver.
func TestOldInstanceLeavesSuccessorSocket(t *testing.T) {
	dir := kubeletDir(t)
	old := newServer(t, dir, "/old/csi.sock")
	stopOld := start(t, old)
	sock := old.SocketPath()
	waitServing(t, sock, "/old/csi.sock")

	succ := newServer(t, dir, "/new/csi.sock")
	stopNew := start(t, succ)
	waitServing(t, sock, "/new/csi.sock")

	if err := stopOld(); err != nil {
		t.Fatalf("old Run: %v", err)
	}
	info, err := dialKubelet(t, sock).GetInfo(rpcCtx(t), &regapi.InfoRequest{})
	if err != nil {
		t.Fatalf("successor socket gone after old instance exit: %v", err)
	}
	if info.Endpoint != "/new/csi.sock" {
		t.Fatalf("endpoint = %q, want the successor's", info.Endpoint)
	}
	if err := stopNew(); err != nil {
		t.Fatalf("new Run: %v", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket still present after successor exit: %v", err)
	}
}

func TestRefusesToDeleteNonSocket(t *testing.T) {
	dir := kubeletDir(t)
	s := newServer(t, dir, "/csi/csi.sock")
	if err := os.MkdirAll(filepath.Dir(s.SocketPath()), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.SocketPath(), []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run = %v, want a not-a-socket error", err)
	}
	if b, _ := os.ReadFile(s.SocketPath()); string(b) != "not a socket" {
		t.Fatal("regular file was touched")
	}
}

func TestNewValidates(t *testing.T) {
	long := "/" + strings.Repeat("k", 100)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; empty means success
	}{
		{"ok default dir", Config{DriverName: driver, Endpoint: "/var/lib/kubelet/plugins/x/csi.sock"}, ""},
		{"ok unix scheme", Config{DriverName: driver, Endpoint: "unix:///p/csi.sock", KubeletDir: "/k"}, ""},
		{"no name", Config{Endpoint: "/p/csi.sock"}, "driver name is required"},
		{"slash in name", Config{DriverName: "a/b", Endpoint: "/p/csi.sock"}, "must not contain"},
		{"relative endpoint", Config{DriverName: driver, Endpoint: "csi.sock"}, "absolute path"},
		{"no endpoint", Config{DriverName: driver}, "absolute path"},
		{"relative kubelet dir", Config{DriverName: driver, Endpoint: "/p/csi.sock", KubeletDir: "kubelet"}, "must be absolute"},
		{"socket path too long", Config{DriverName: driver, Endpoint: "/p/csi.sock", KubeletDir: long}, "unix socket limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if strings.HasPrefix(s.endpoint, "unix:") {
					t.Fatalf("endpoint %q keeps its scheme", s.endpoint)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
	s, _ := New(Config{DriverName: driver, Endpoint: "/p/csi.sock"})
	if want := "/var/lib/kubelet/plugins_registry/modelcache.csi.io-reg.sock"; s.SocketPath() != want {
		t.Fatalf("default SocketPath = %q, want %q", s.SocketPath(), want)
	}
}
