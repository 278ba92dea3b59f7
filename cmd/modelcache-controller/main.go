// Command modelcache-controller runs modelcache's cluster-wide controllers
// (a Deployment, not on every node): the provisioner of the model-cache
// StorageClass and the pod webhook that sends pods to warm nodes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/provisioner"
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
	driverName  string
	leaderElect bool
	kubeconfig  string
	metricsAddr string
	verbose     bool
	webhook     webhookOptions
	webhookIPs  []string
}

func newRootCmd() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "modelcache-controller",
		Short: "Cluster-wide controllers of modelcache: claims of the model-cache StorageClass, ModelCache status, the pod webhook",
		Long: `modelcache-controller runs modelcache's cluster-wide controllers: one active
replica for the whole cluster (the Deployment modelcache-controller), talking
only to the API server. It needs no privileges, no host paths and no node's
cache agent.

It provisions claims of the model-cache StorageClass (every class whose
provisioner is --driver-name): each claim becomes a ReadOnlyMany
PersistentVolume whose attributes carry the model, from the claim annotation
modelcache.io/model or the StorageClass parameter "model". Nothing is
allocated; the node's csi-plugin mounts the model when a pod uses the volume.
A claim that names no model gets a ProvisioningFailed event saying so.

With --webhook-addr it also serves a mutating admission webhook for pods:
a pod with a modelcache volume (inline, a claim or an ephemeral volume of a
model-cache class) gets a preferred node affinity for the warm-node labels
of its models, or a required one with the annotation
modelcache.io/schedule=require on the pod or its namespace (off: none).
It never refuses a pod. Its certificate is self-signed and kept in
--webhook-secret; the CA goes into --webhook-config's caBundle, so no
cert-manager is needed.

It keeps the status of every ModelCache (modelcache.io/v1alpha1, deploy/crds):
the nodes its placement matches, how many hold the model and at which
revision, from the ModelCacheNode each node's agent writes.

With --leader-election (the default) only the replica holding a Lease in its
namespace (env POD_NAMESPACE) acts, so the Deployment can run more than one
for availability. It finds the API server in-cluster (its ServiceAccount), or
through --kubeconfig.`,
		Version:       buildinfo.Version(version),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, rest.InClusterConfig)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.driverName, "driver-name", csi.DefaultDriverName, "provision claims of StorageClasses whose provisioner is this CSI driver")
	f.BoolVar(&o.leaderElect, "leader-election", true, "only one replica provisions at a time (a Lease in the pod's namespace)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the API server (default: in-cluster config)")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9092", `address for Prometheus /metrics and the probes /healthz and /readyz; "" disables`)
	f.StringVar(&o.webhook.addr, "webhook-addr", "", `serve the pod webhook (warm-node affinity for pods with modelcache volumes) over TLS here, e.g. ":9443"; "" disables`)
	f.StringVar(&o.webhook.service, "webhook-service", "modelcache-webhook", "the webhook's Service in the controller's namespace: the names its certificate carries")
	f.StringSliceVar(&o.webhookIPs, "webhook-ip", nil, "IP addresses the webhook's certificate also carries (a webhook reached by URL)")
	f.StringVar(&o.webhook.config, "webhook-config", "modelcache", "the MutatingWebhookConfiguration whose caBundle gets the webhook's CA")
	f.StringVar(&o.webhook.secret, "webhook-secret", "modelcache-webhook-tls", "the Secret in the controller's namespace that keeps the webhook's CA and certificate")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log at debug level, with client-go's and the provisioner library's details (klog -v=4)")
	return cmd
}

// run runs the controllers until ctx ends. inCluster is
// rest.InClusterConfig, a parameter for tests.
func run(ctx context.Context, o options, inCluster func() (*rest.Config, error)) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// The provisioner library and client-go log through klog: into the same
	// handler, with their V(1)..V(4) details at debug level (--verbose).
	klog.SetSlogLogger(log)
	if o.verbose {
		var fs flag.FlagSet
		klog.InitFlags(&fs)
		_ = fs.Set("v", "4")
	}
	if o.driverName == "" {
		return errors.New("--driver-name is empty")
	}
	for _, s := range o.webhookIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--webhook-ip %q is not an IP address", s)
		}
		o.webhook.ips = append(o.webhook.ips, ip)
	}
	if o.webhook.addr != "" && o.webhook.service == "" && len(o.webhook.ips) == 0 {
		return errors.New("--webhook-addr needs --webhook-service or --webhook-ip: the names the API server reaches the webhook by")
	}
	cfg, err := apiConfig(o.kubeconfig, inCluster)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("API client for %s: %w", cfg.Host, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("API client for %s: %w", cfg.Host, err)
	}

	g, ctx := errgroup.WithContext(ctx)
	if o.metricsAddr != "" {
		l, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		srv := metricsServer()
		log.Info("serving metrics", "addr", l.Addr().String())
		g.Go(func() error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	if o.webhook.addr != "" {
		l, err := net.Listen("tcp", o.webhook.addr)
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		// Every replica serves the webhook (its Service picks any), not
		// only the leader.
		g.Go(func() error { return serveWebhook(ctx, l, kube, dyn, o.driverName, o.webhook, log) })
	}
	log.Info("provisioner starting", "driver", o.driverName, "leaderElection", o.leaderElect,
		"apiServer", cfg.Host, "version", buildinfo.Version(version))
	g.Go(func() error {
		provision := func(ctx context.Context) error { provisioner.Run(ctx, kube, o.driverName); return nil }
		if !o.leaderElect {
			return provision(ctx)
		}
		// The Lease the provisioner library took before (its name), so a
		// replica of an older version and a newer one never both provision
		// during a rolling upgrade.
		return lead(ctx, kube, strings.ReplaceAll(o.driverName, "/", "-"), log, provision)
	})
	g.Go(func() error { return runStatus(ctx, kube, dyn, o.leaderElect, log) })
	return g.Wait()
}

// apiConfig is the API server's config: from kubeconfig when one is named,
// else in-cluster.
func apiConfig(kubeconfig string, inCluster func() (*rest.Config, error)) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
	} else if cfg, err = inCluster(); err != nil {
		return nil, fmt.Errorf("modelcache-controller needs the API server: not running in a cluster (%w) and no --kubeconfig", err)
	}
	cfg.UserAgent = "modelcache-controller/" + buildinfo.Version(version)
	return cfg, nil
}

// metricsServer serves /metrics (the Go runtime and the process) and the
// probes: /healthz and /readyz answer 200 while the process serves HTTP. A
// replica waiting for the Lease is ready too: it takes over when the leader
// goes.
func metricsServer() *http.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}
