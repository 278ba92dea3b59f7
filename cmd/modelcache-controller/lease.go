package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// lead runs fn while this replica holds the Lease name in the controller's
// namespace, and stands for election again after a lost lease (an API
// server that did not answer in time) until ctx ends. The lease is
// released when ctx ends, so another replica takes over at once instead of
// after the lease expires. fn's error ends lead.
func lead(ctx context.Context, kube kubernetes.Interface, name string, log *slog.Logger, fn func(context.Context) error) error {
	host, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{
		LeaseMeta: metav1.ObjectMeta{Name: name, Namespace: controllerNamespace()},
		Client:    kube.CoordinationV1(),
		// Unique per process: two replicas on one host must not both lead.
		LockConfig: resourcelock.ResourceLockConfig{Identity: host + "_" + string(uuid.NewUUID())},
	}
	for ctx.Err() == nil {
		var runErr error
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, Name: name, ReleaseOnCancel: true,
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading", "lease", name)
					runErr = fn(ctx)
				},
				OnStoppedLeading: func() { log.Info("no longer leading (lease lost or stopping)", "lease", name) },
			},
		})
		if runErr != nil {
			return runErr
		}
	}
	return nil
}
