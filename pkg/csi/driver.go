// Package csi is the CSI plugin: identity, node and controller services that
// put cached models into pods as read-only volumes. It talks to the node's
// cache agent through the agent client only; it never fetches or stores
// anything itself.
package csi

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

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
)

// DefaultDriverName is the CSI driver name pods and StorageClasses use.
const DefaultDriverName = "modelcache.csi.io"

// Agent is the part of the cache agent's client the plugin uses.
type Agent interface {
	Ensure(ctx context.Context, ref string, opts agentapi.EnsureOptions, onProgress func(agentapi.Progress)) (agentapi.Progress, error)
	Pin(ctx context.Context, ref, holder string) (agentapi.PinResponse, error)
	Unpin(ctx context.Context, ref, holder string) error
	Status(ctx context.Context) (agentapi.StatusReport, error)
	Healthy(ctx context.Context) error
}

// Options configure a Driver. Node needs Agent, Mounter, StateDir and
// CacheDir; Controller needs nothing but the name.
type Options struct {
	DriverName string
	Version    string
	NodeID     string
	Node       bool
	Controller bool

	Agent   Agent
	Mounter mounter.Interface
	// StateDir keeps one record per published volume (see records).
	StateDir string
	// CacheDir is the agent's cache directory, at the same path in this
	// process as in the agent. Publish bind-mounts only directories under
	// its models/, whatever path the agent answers.
	CacheDir string
	// PublishWait bounds how long NodePublishVolume waits for a download
	// before it answers Unavailable with the progress; kubelet retries.
	PublishWait time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Driver implements the CSI services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer

	opts    Options
	log     *slog.Logger
	recs    *records
	metrics *metrics

	mu       sync.Mutex
	inflight map[string]bool // volume IDs with a call running
}

// New checks opts and returns a Driver.
func New(opts Options) (*Driver, error) {
	if opts.DriverName == "" {
		opts.DriverName = DefaultDriverName
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PublishWait <= 0 {
		opts.PublishWait = 20 * time.Second
	}
	if !opts.Node && !opts.Controller {
		return nil, errors.New("csi: neither the node nor the controller service is enabled")
	}
	d := &Driver{opts: opts, log: opts.Logger, inflight: map[string]bool{}, metrics: newMetrics(opts.Registerer)}
	if opts.Node {
		if opts.NodeID == "" {
			return nil, errors.New("csi: the node service needs a node ID")
		}
		if opts.Agent == nil || opts.Mounter == nil {
			return nil, errors.New("csi: the node service needs an agent client and a mounter")
		}
		if opts.CacheDir == "" {
			return nil, errors.New("csi: the node service needs the cache directory, to check what it mounts")
		}
		dir, err := filepath.Abs(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("csi: cache directory: %w", err)
		}
		d.opts.CacheDir = dir
		recs, err := openRecords(opts.StateDir)
		if err != nil {
			return nil, fmt.Errorf("csi: %w", err)
		}
		d.recs = recs
	}
	return d, nil
}

// Register adds the enabled services to s.
func (d *Driver) Register(s *grpc.Server) {
	csi.RegisterIdentityServer(s, d)
	if d.opts.Node {
		csi.RegisterNodeServer(s, d)
	}
	if d.opts.Controller {
		csi.RegisterControllerServer(s, d)
	}
}

// Serve listens on endpoint (unix:///path or a path) and serves until ctx
// ends; in-flight calls finish first.
func (d *Driver) Serve(ctx context.Context, endpoint string) error {
	path, err := socketPath(endpoint)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("csi: socket directory: %w", err)
	}
	// A socket left by a killed plugin would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("csi: remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("csi: listen on %s: %w", path, err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(d.intercept))
	d.Register(s)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.GracefulStop()
	}()
	d.log.Info("CSI plugin serving", "endpoint", path, "driver", d.opts.DriverName, "version", d.opts.Version,
		"node", d.opts.Node, "controller", d.opts.Controller)
	err = s.Serve(l)
	<-stopped
	os.Remove(path)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("csi: serve: %w", err)
	}
	return nil
}

func socketPath(endpoint string) (string, error) {
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		endpoint = p
	}
	if endpoint == "" || strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("csi: endpoint %q: want unix:///path/to/csi.sock", endpoint)
	}
	return endpoint, nil
}

// lock claims volumeID for one call; false means another call holds it and
// the caller answers Aborted, which kubelet retries.
func (d *Driver) lock(volumeID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight[volumeID] {
		return false
	}
	d.inflight[volumeID] = true
	return true
}

func (d *Driver) unlock(volumeID string) {
	d.mu.Lock()
	delete(d.inflight, volumeID)
	d.mu.Unlock()
}
