package provisioner

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Run provisions claims of every StorageClass whose provisioner is
// driverName until ctx ends. With leaderElect, only one replica acts at a
// time (a Lease in the plugin's namespace), so the controller can run with
// more than one replica for availability.
func Run(ctx context.Context, client kubernetes.Interface, driverName string, leaderElect bool) {
	pc := controller.NewProvisionController(ctx, client, driverName, &Provisioner{DriverName: driverName},
		controller.LeaderElection(leaderElect),
		// A failure is final for the claim as it stands (no model, a bad
		// ref, a writer access mode); retry slowly in case the user fixes
		// the StorageClass rather than the claim.
		controller.RetryIntervalMax(5*time.Minute),
	)
	pc.Run(ctx)
}
