package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/modelcache/modelcache/pkg/modelstatus"
)

// statusLease is the Lease whose holder keeps the ModelCaches' status; the
// provisioner library elects its own leader.
const statusLease = "modelcache-status"

// runStatus keeps the ModelCaches' status until ctx ends: with leader
// election, only while this replica holds statusLease. Without the CRDs
// installed it logs so and does nothing.
func runStatus(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface, leaderElect bool, log *slog.Logger) error {
	served, err := modelstatus.Served(ctx, dyn)
	if err != nil {
		log.Error("cannot read ModelCaches; their status is not kept", "err", err)
		return nil
	}
	if !served {
		log.Warn("the ModelCache CRDs are not installed (deploy/crds): their status is not kept")
		return nil
	}
	c := modelstatus.New(kube, dyn, modelstatus.Options{Logger: log})
	if !leaderElect {
		return c.Run(ctx)
	}
	id, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: statusLease, Namespace: controllerNamespace()},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	// A lost lease (an API server that did not answer in time) is not the
	// end: stand for election again until ctx ends.
	for ctx.Err() == nil {
		var runErr error
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, Name: statusLease, ReleaseOnCancel: true,
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { runErr = c.Run(ctx) },
				OnStoppedLeading: func() { log.Info("no longer keeping ModelCache status (lease lost or stopping)") },
			},
		})
		if runErr != nil {
			return runErr
		}
	}
	return nil
}
