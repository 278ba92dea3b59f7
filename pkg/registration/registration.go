// Package registration registers the CSI driver with kubelet itself, doing
// the job of the node-driver-registrar sidecar so the DaemonSet needs one
// image fewer.
//
// Kubelet's plugin watcher watches <kubelet-dir>/plugins_registry with
// inotify. When a socket appears there it dials it, calls GetInfo to learn the
// driver name and the CSI endpoint, registers the driver, and reports the
// outcome with NotifyRegistrationStatus. When the socket disappears it
// deregisters the driver; when the socket is recreated (plugin restart) it
// registers again. So the lifecycle here is simply: own the socket file while
// serving, remove it when done.
package registration

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	regapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// DefaultKubeletDir is kubelet's default --root-dir.
const DefaultKubeletDir = "/var/lib/kubelet"

// SupportedVersions are the CSI spec versions advertised to kubelet. Kubelet
// only accepts major version 1.
var SupportedVersions = []string{"1.0.0"}

// ErrRejected classes a failed registration reported by kubelet.
var ErrRejected = errors.New("registration: kubelet rejected the plugin")

// maxSocketPath is the usable length of sun_path on Linux (108 bytes with the
// terminating NUL). A longer path fails in bind with an unhelpful EINVAL.
const maxSocketPath = 107

// stopGrace bounds GracefulStop: kubelet's calls are tiny unary RPCs, so a
// longer wait means a stuck peer and must not block plugin shutdown.
const stopGrace = 5 * time.Second

// Config describes the driver to register.
type Config struct {
	// DriverName is the CSI driver name, e.g. modelcache.csi.io. It names the
	// socket and must match the CSIDriver object.
	DriverName string
	// Endpoint is the CSI socket path as kubelet sees it (on the host), which
	// may differ from the path inside the plugin container. A "unix://"
	// prefix is accepted and stripped, since kubelet wants a plain path.
	Endpoint string
	// KubeletDir is kubelet's --root-dir; empty means DefaultKubeletDir.
	KubeletDir string
	// Logger receives registration events; nil means slog.Default().
	Logger *slog.Logger
}

// Status is what kubelet last told the plugin about its registration.
type Status struct {
	// Registered is true once kubelet confirmed the registration on the
	// current socket.
	Registered bool
	// Err is the last failure kubelet reported (wrapping ErrRejected), nil if
	// none since the socket was created.
	Err error
	// At is when kubelet last called NotifyRegistrationStatus; zero if never.
	At time.Time
}

// Server serves the registration socket. Create it with New, run it with Run,
// read Status from any goroutine.
type Server struct {
	regapi.UnimplementedRegistrationServer

	name     string
	endpoint string
	sock     string
	log      *slog.Logger

	mu     sync.Mutex
	status Status
}

// New validates cfg and returns a Server; it touches no files.
func New(cfg Config) (*Server, error) {
	if cfg.DriverName == "" {
		return nil, errors.New("registration: driver name is required")
	}
	if strings.ContainsAny(cfg.DriverName, "/\x00") {
		return nil, fmt.Errorf("registration: driver name %q must not contain '/'", cfg.DriverName)
	}
	ep := strings.TrimPrefix(cfg.Endpoint, "unix://")
	if !filepath.IsAbs(ep) {
		return nil, fmt.Errorf("registration: endpoint %q must be an absolute path as kubelet sees it", cfg.Endpoint)
	}
	dir := cfg.KubeletDir
	if dir == "" {
		dir = DefaultKubeletDir
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("registration: kubelet dir %q must be absolute", dir)
	}
	sock := filepath.Join(dir, "plugins_registry", cfg.DriverName+"-reg.sock")
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("registration: socket path %q is %d bytes, over the %d-byte unix socket limit", sock, len(sock), maxSocketPath)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		name:     cfg.DriverName,
		endpoint: filepath.Clean(ep),
		sock:     sock,
		log:      log.With("component", "registration", "driver", cfg.DriverName),
	}, nil
}

// SocketPath is the registration socket kubelet dials.
func (s *Server) SocketPath() string { return s.sock }

// Status reports kubelet's last word on the registration.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Serve is New followed by Run, for callers that do not need Status.
func Serve(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run creates the socket (replacing a stale one left by a crashed instance),
// serves kubelet until ctx is done, then removes the socket so kubelet
// deregisters the driver. It returns nil after a cancel, or the error that
// stopped it.
func (s *Server) Run(ctx context.Context) error {
	l, mine, err := s.listen()
	if err != nil {
		return err
	}
	// A fresh socket means kubelet will register again from scratch; an old
	// confirmation says nothing about this one.
	s.mu.Lock()
	s.status = Status{}
	s.mu.Unlock()

	gs := grpc.NewServer()
	regapi.RegisterRegistrationServer(gs, s)
	s.log.Info("registration socket ready", "socket", s.sock, "endpoint", s.endpoint)

	served := make(chan error, 1)
	go func() { served <- gs.Serve(l) }()

	var runErr error
	select {
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(stopGrace):
			gs.Stop()
		}
		<-served
	case err := <-served:
		runErr = fmt.Errorf("registration: serve %s: %w", s.sock, err)
		gs.Stop()
	}
	s.removeOwn(l, mine)
	return runErr
}

// listen replaces any stale socket and binds a new one. It records the new
// file's identity so that removeOwn never deletes a successor's socket.
func (s *Server) listen() (*net.UnixListener, fs.FileInfo, error) {
	dir := filepath.Dir(s.sock)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("registration: create %s: %w", dir, err)
	}
	fi, err := os.Lstat(s.sock)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("registration: stat %s: %w", s.sock, err)
	case fi.Mode()&fs.ModeSocket == 0:
		// Only ever delete sockets: anything else at this path was put there
		// by someone else and deleting it would hide a misconfiguration.
		return nil, nil, fmt.Errorf("registration: %s exists and is not a socket (%s)", s.sock, fi.Mode().Type())
	default:
		// A leftover from a crash (or an instance still shutting down in a
		// surge rollout). Replacing it is what makes kubelet re-register us.
		if err := os.Remove(s.sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("registration: remove stale socket %s: %w", s.sock, err)
		}
		s.log.Info("removed stale registration socket", "socket", s.sock)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.sock, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("registration: listen on %s: %w", s.sock, err)
	}
	// Go would unlink by path on Close, which would delete the socket of a
	// newer instance that replaced ours; removeOwn checks identity first.
	l.SetUnlinkOnClose(false)
	mine, err := os.Lstat(s.sock)
	if err != nil {
		_ = l.Close()
		return nil, nil, fmt.Errorf("registration: stat new socket %s: %w", s.sock, err)
	}
	return l, mine, nil
}

// removeOwn deletes the socket only if it is still the file this instance
// created, so an old instance exiting after its replacement started does not
// deregister the driver behind the new one's back.
func (s *Server) removeOwn(l *net.UnixListener, mine fs.FileInfo) {
	_ = l.Close()
	cur, err := os.Lstat(s.sock)
	if err != nil {
		return // already gone: nothing to clean up
	}
	if !sameSocket(mine, cur) {
		s.log.Info("registration socket was replaced by another instance; leaving it", "socket", s.sock)
		return
	}
	if err := os.Remove(s.sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove registration socket", "socket", s.sock, "err", err)
		return
	}
	s.log.Info("registration socket removed", "socket", s.sock)
}

// sameSocket reports whether a and b are the same socket file. Inode numbers
// are reused at once on tmpfs, so a successor's socket can get ours; its
// creation time (mtime of a socket) tells them apart.
func sameSocket(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime())
}

// GetInfo tells kubelet who we are and where the CSI socket is.
func (s *Server) GetInfo(context.Context, *regapi.InfoRequest) (*regapi.PluginInfo, error) {
	s.log.Debug("kubelet asked for plugin info")
	return &regapi.PluginInfo{
		Type:              regapi.CSIPlugin,
		Name:              s.name,
		Endpoint:          s.endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus records kubelet's verdict. A failure is logged at
// error level because the driver's volumes cannot mount until it is fixed;
// kubelet retries on its own, so there is nothing to do but report it.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *regapi.RegistrationStatus) (*regapi.RegistrationStatusResponse, error) {
	now := time.Now()
	s.mu.Lock()
	if st.GetPluginRegistered() {
		s.status = Status{Registered: true, At: now}
	} else {
		s.status = Status{Err: fmt.Errorf("%w: %s", ErrRejected, st.GetError()), At: now}
	}
	s.mu.Unlock()
	if st.GetPluginRegistered() {
		s.log.Info("kubelet registered the plugin", "endpoint", s.endpoint)
	} else {
		s.log.Error("kubelet failed to register the plugin", "endpoint", s.endpoint, "err", st.GetError())
	}
	return &regapi.RegistrationStatusResponse{}, nil
}
