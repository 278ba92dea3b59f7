package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	typedappsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// prefetchOptions turn on the Deployment prefetch controller.
type prefetchOptions struct {
	// Enabled runs the controller. Unset, it follows whether an API server
	// is configured (in-cluster, or --kubeconfig).
	Enabled    bool
	enabledSet bool
	Kubeconfig string
	NodeName   string
	// WarmPageCache reads each prefetched model into the page cache once it
	// is ready, as `prefetch --warm-page-cache` does.
	WarmPageCache bool
}

func (o *prefetchOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "prefetch", false, "run the prefetch controller: download the models named by modelcache.io/prefetch on Deployments and StatefulSets that could run on this node, and label the node (default true in a cluster or with --kubeconfig)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig of the API server for --prefetch (default: in-cluster config)")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name in Kubernetes (env NODE_NAME, from the downward API's spec.nodeName)")
	fs.BoolVar(&o.WarmPageCache, "prefetch-warm-page-cache", false, "read each model the prefetch controller fetches (or finds cached) into the page cache, as far as memory allows, so the first pod's load reads memory")
}

// resolve decides whether the controller runs, and with which API config.
// inCluster is rest.InClusterConfig, a parameter for tests.
func (o *prefetchOptions) resolve(fs *pflag.FlagSet, inCluster func() (*rest.Config, error)) (*rest.Config, error) {
	o.enabledSet = fs.Changed("prefetch")
	if o.enabledSet && !o.Enabled {
		return nil, nil
	}
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		cfg, err = inCluster()
		if err != nil {
			if o.enabledSet {
				return nil, fmt.Errorf("--prefetch needs an API server: not running in a cluster (%v) and no --kubeconfig", err)
			}
			return nil, nil // auto: no cluster, no controller
		}
	}
	if o.NodeName == "" {
		return nil, errors.New("prefetch: --node-name (or env NODE_NAME) is required; set it from the downward API (spec.nodeName), or pass --prefetch=false")
	}
	cfg.UserAgent = "modelcache-agent/" + buildinfo.Version(version)
	return cfg, nil
}

// startPrefetch runs the controller until ctx ends. A controller that
// cannot start is logged, not fatal: volumes keep working without it.
func startPrefetch(ctx context.Context, cfg *rest.Config, o *prefetchOptions, a *agent.Agent, log *slog.Logger) error {
	client, err := newKubeClient(cfg)
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	c, err := prefetch.New(client, agentAdapter{a, o.WarmPageCache}, prefetch.Options{NodeName: o.NodeName, Logger: log, Resources: dyn})
	if err != nil {
		return err
	}
	go func() {
		if err := c.Run(ctx); err != nil {
			log.Error("prefetch controller stopped; models are still fetched on demand", "err", err)
		}
	}()
	log.Info("prefetch controller starting", "node", o.NodeName, "apiServer", cfg.Host)
	return nil
}

// kubeClient is the two API groups the prefetch controller uses, without
// the full clientset (see prefetch.Client).
type kubeClient struct {
	core *typedcorev1.CoreV1Client
	apps *typedappsv1.AppsV1Client
}

func (k kubeClient) CoreV1() typedcorev1.CoreV1Interface { return k.core }
func (k kubeClient) AppsV1() typedappsv1.AppsV1Interface { return k.apps }

func newKubeClient(cfg *rest.Config) (kubeClient, error) {
	core, err := typedcorev1.NewForConfig(cfg)
	if err != nil {
		return kubeClient{}, err
	}
	apps, err := typedappsv1.NewForConfig(cfg)
	if err != nil {
		return kubeClient{}, err
	}
	return kubeClient{core: core, apps: apps}, nil
}

// agentAdapter is *agent.Agent as the prefetch controller sees it.
type agentAdapter struct {
	a    *agent.Agent
	warm bool
}

func (x agentAdapter) Ensure(ctx context.Context, ref model.Ref, wait time.Duration) (prefetch.Result, error) {
	p, err := x.a.Ensure(ctx, ref, agentapi.EnsureOptions{Wait: wait, WarmPageCache: x.warm})
	return prefetch.Result{Ready: p.State == agentapi.StateReady, Hit: p.Hit, Revision: p.Revision,
		TotalBytes: p.TotalBytes, FetchedBytes: p.FetchedBytes, Started: p.Started, Finished: p.Finished}, err
}

func (x agentAdapter) Pin(ref model.Ref, holder string) error {
	_, err := x.a.Pin(ref, holder)
	return err
}

func (x agentAdapter) Unpin(ref model.Ref, holder string) error { return x.a.Unpin(ref, holder) }

func (x agentAdapter) Models() []agentapi.ModelStatus { return x.a.Status().Models }
func (x agentAdapter) Changed() <-chan struct{}       { return x.a.Changed() }
func (x agentAdapter) Status() agentapi.StatusReport  { return x.a.Status() }
func (x agentAdapter) AllowedIn(ref model.Ref, ns string) error {
	return x.a.AllowedIn(ref, ns)
}
