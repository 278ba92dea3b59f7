// Command csi-plugin is modelcache's CSI driver. On every node (the
// DaemonSet) it mounts models the cache agent holds into pods, read-only;
// with --mode=controller it serves the CSI Controller service
// (CreateVolume, DeleteVolume) for the external-provisioner sidecar. It
// never talks to the API server and links no client-go: the built-in
// provisioner is cmd/modelcache-controller.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
	"github.com/modelcache/modelcache/pkg/registration"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type options struct {
	endpoint, mode, nodeID, driverName string
	agentSocket, stateDir, metricsAddr string
	cacheDir                           string
	publishWait, reconcileEvery        time.Duration
	register                           bool
	kubeletDir, kubeletEndpoint        string
	verbose                            bool
}

func newRootCmd() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "csi-plugin",
		Short: "CSI driver of modelcache: mounts cached models read-only into pods",
		Long: `csi-plugin is the CSI driver modelcache.csi.io.

In --mode=node (every node, next to cache-agent) it answers kubelet's
NodePublishVolume: it asks the agent for the model named by the volume's
"model" attribute, waits at most --publish-wait for a download, pins the model
for the volume and bind-mounts it read-only, nosuid, nodev at the pod's target.
A model not ready in time gives Unavailable with the download's progress, which
kubectl describe pod shows while kubelet retries. A warm publish takes a few
milliseconds whatever the model's size.

With --kubelet-registration (the default) the plugin registers itself with
kubelet through <kubelet-dir>/plugins_registry, so no node-driver-registrar
sidecar is needed; turn it off to use the sidecar instead.

In --mode=controller it serves only the CSI Controller service (CreateVolume,
DeleteVolume), for those who run the standard external-provisioner sidecar
next to it: each volume's attributes carry the model named by the
StorageClass parameters, since the sidecar passes no claim annotations.
Nothing is allocated, and the plugin never talks to the API server. The
built-in provisioner of the model-cache StorageClass, which needs no sidecar
and also reads the claim annotation modelcache.io/model, is the command
modelcache-controller (the Deployment modelcache-controller).`,
		Version:       buildinfo.Version(version),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	cmd.SetFlagErrorFunc(movedFlags)
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", envOr("CSI_ENDPOINT", "unix:///csi/csi.sock"), "CSI socket to serve (env CSI_ENDPOINT)")
	f.StringVar(&o.mode, "mode", "node", "services to run: node, controller or all")
	f.StringVar(&o.nodeID, "node-id", os.Getenv("NODE_NAME"), "this node's name as Kubernetes knows it (env NODE_NAME; default the hostname)")
	f.StringVar(&o.driverName, "driver-name", csi.DefaultDriverName, "CSI driver name")
	f.StringVar(&o.agentSocket, "agent-socket", envOr("MODELCACHE_SOCKET", "/run/modelcache/agent.sock"),
		"unix socket of the cache agent (env MODELCACHE_SOCKET)")
	f.StringVar(&o.cacheDir, "cache-dir", "/var/lib/modelcache",
		"the cache agent's --cache-dir, mounted at the same path here: only directories under its models/ are mounted into pods")
	f.StringVar(&o.stateDir, "state-dir", "/var/lib/modelcache-csi", "where the plugin records published volumes; must survive plugin restarts (not under the agent's --cache-dir, which the agent owns)")
	f.DurationVar(&o.publishWait, "publish-wait", 20*time.Second,
		"longest a publish waits for a download before answering Unavailable with progress (kubelet retries; keep it well under kubelet's 2m)")
	f.DurationVar(&o.reconcileEvery, "reconcile-interval", 30*time.Second, "how often pins are checked against mounts")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9091", `address for Prometheus /metrics and the probes /healthz (alive) and /readyz (agent answering); "" disables`)
	f.BoolVar(&o.register, "kubelet-registration", true, "register with kubelet through its plugins_registry directory (node mode)")
	f.StringVar(&o.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet's root directory")
	f.StringVar(&o.kubeletEndpoint, "kubelet-endpoint", "",
		"the CSI socket path as kubelet sees it (default <kubelet-dir>/plugins/<driver-name>/csi.sock)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log at debug level (every CSI call, probes included)")
	return cmd
}

func run(ctx context.Context, o options) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dopts := csi.Options{DriverName: o.driverName, Version: buildinfo.Version(version), NodeID: o.nodeID,
		StateDir: o.stateDir, CacheDir: o.cacheDir, PublishWait: o.publishWait, Logger: log}
	switch o.mode {
	case "node":
		dopts.Node = true
	case "controller":
		dopts.Controller = true
	case "all":
		dopts.Node, dopts.Controller = true, true
	default:
		return fmt.Errorf("--mode %q: want node, controller or all", o.mode)
	}
	if dopts.Node {
		if dopts.NodeID == "" {
			h, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("no --node-id and no hostname: %w", err)
			}
			dopts.NodeID = h
		}
		dopts.Agent = agentapi.NewClient(o.agentSocket)
		dopts.Mounter = mounter.New()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dopts.Registerer = reg
	d, err := csi.New(dopts)
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Serve(ctx, o.endpoint) })
	if dopts.Node {
		g.Go(func() error { d.Run(ctx, o.reconcileEvery); return nil })
		if o.register {
			g.Go(func() error { return register(ctx, o, log) })
		}
	}
	if o.metricsAddr != "" {
		l, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		health := d.HealthHandler()
		mux.Handle("/healthz", health)
		mux.Handle("/readyz", health)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// movedFlags says where the flags of the built-in provisioner went, for
// manifests written for a csi-plugin that still had it.
func movedFlags(_ *cobra.Command, err error) error {
	for _, f := range []string{"provisioner", "leader-election", "kubeconfig"} {
		if err.Error() == "unknown flag: --"+f {
			return fmt.Errorf("%w: the built-in provisioner and its flags moved to the command modelcache-controller", err)
		}
	}
	return err
}

// kubeletEndpoint is where kubelet dials the CSI socket: the plugin's own
// path when the DaemonSet mounts the kubelet directory at the same path.
func kubeletEndpoint(o options) string {
	if o.kubeletEndpoint != "" {
		return o.kubeletEndpoint
	}
	return filepath.Join(o.kubeletDir, "plugins", o.driverName, "csi.sock")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// register tells kubelet about the driver through its plugins_registry
// directory, the job the node-driver-registrar sidecar would otherwise do.
func register(ctx context.Context, o options, log *slog.Logger) error {
	return registration.Serve(ctx, registration.Config{DriverName: o.driverName,
		Endpoint: kubeletEndpoint(o), KubeletDir: o.kubeletDir, Logger: log})
}
