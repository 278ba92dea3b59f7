package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/pkg/modelstatus"
)

// statusLease is the Lease whose holder keeps the ModelCaches' status.
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
	return lead(ctx, kube, statusLease, log, c.Run)
}
