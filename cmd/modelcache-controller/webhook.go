package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/modelstatus"
	"github.com/modelcache/modelcache/pkg/webhook"
)

// webhookOptions are the --webhook-* flags.
type webhookOptions struct {
	addr    string // "" disables
	service string
	config  string
	secret  string
	ips     []net.IP
}

// controllerNamespace is the namespace of the controller's pod (its
// Secret and Service live there).
func controllerNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "modelcache-system"
}

// listerLookup reads claims, classes and namespaces from informers' caches,
// and models' sizes from the nodes' reports (nil without the CRDs).
type listerLookup struct {
	f     informers.SharedInformerFactory
	sizes *modelstatus.Sizes
}

func (l listerLookup) ModelSize(ref model.Ref) (int64, bool) {
	if l.sizes == nil {
		return 0, false
	}
	return l.sizes.ModelSize(ref)
}

func (l listerLookup) Claim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	return l.f.Core().V1().PersistentVolumeClaims().Lister().PersistentVolumeClaims(ns).Get(name)
}

func (l listerLookup) StorageClass(name string) (*storagev1.StorageClass, error) {
	return l.f.Storage().V1().StorageClasses().Lister().Get(name)
}

func (l listerLookup) Namespace(name string) (*corev1.Namespace, error) {
	ns, err := l.f.Core().V1().Namespaces().Lister().Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return ns, err
}

// serveWebhook serves the pod webhook over TLS on l until ctx ends, with
// a certificate kept in the controller's Secret (webhook.Certs).
func serveWebhook(ctx context.Context, l net.Listener, kube kubernetes.Interface, dyn dynamic.Interface, driver string, o webhookOptions, log *slog.Logger) error {
	ns := controllerNamespace()
	certs := &webhook.Certs{Client: kube, Namespace: ns, Secret: o.secret, Webhook: o.config, IPs: o.ips}
	if o.service != "" {
		certs.DNSNames = []string{o.service + "." + ns + ".svc", o.service + "." + ns + ".svc.cluster.local", o.service + "." + ns, o.service}
	}
	var current atomic.Pointer[tls.Certificate]
	pair, err := certs.Ensure(ctx)
	if err != nil {
		return err
	}
	current.Store(pair)

	f := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	lookup := listerLookup{f: f}
	// Models' sizes weigh the preferred terms; without the CRDs every model
	// weighs the same.
	if served, err := modelstatus.Served(ctx, dyn); served {
		if lookup.sizes, err = modelstatus.NewSizes(ctx, dyn); err != nil {
			return err
		}
	} else {
		log.Warn("webhook: no ModelCacheNodes to read (CRDs not installed, or no access): every model weighs the same", "err", err)
	}
	// Touch each lister so the factory starts its informer.
	f.Core().V1().PersistentVolumeClaims().Informer()
	f.Storage().V1().StorageClasses().Informer()
	f.Core().V1().Namespaces().Informer()
	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("webhook: %v cache did not sync", typ)
		}
	}

	m := &webhook.Mutator{DriverName: driver, Lookup: lookup}
	srv := &http.Server{
		Handler: m.Handler(log),
		// Any pod can reach the Service: slow or idle clients are cut off
		// (the API server's own timeout for this webhook is 5 s).
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load(), nil }},
	}
	go func() {
		t := time.NewTicker(webhook.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				srv.Close()
				return
			case <-t.C:
				if p, err := certs.Ensure(ctx); err != nil {
					log.Error("webhook certificate check failed; serving the current one", "err", err)
				} else {
					current.Store(p)
				}
			}
		}
	}()
	log.Info("serving the pod webhook", "addr", l.Addr().String(), "path", webhook.PathMutatePods,
		"secret", ns+"/"+o.secret, "webhookConfiguration", o.config)
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}
