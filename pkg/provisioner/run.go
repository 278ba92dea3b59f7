package provisioner

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Run provisions claims of every StorageClass whose provisioner is
// driverName until ctx ends. It elects no leader: a caller that runs more
// than one replica runs it only while holding a Lease (see
// cmd/modelcache-controller). The library's own election exits the
// process with status 1 when ctx ends, and leaves its Lease held until it
// expires.
func Run(ctx context.Context, client kubernetes.Interface, driverName string) {
	pc := controller.NewProvisionController(ctx, client, driverName, &Provisioner{DriverName: driverName},
		controller.LeaderElection(false),
		// A failure is final for the claim as it stands (no model, a bad
		// ref, a writer access mode); retry slowly in case the user fixes
		// the StorageClass rather than the claim.
		controller.RetryIntervalMax(5*time.Minute),
	)
	pc.Run(ctx)
}
