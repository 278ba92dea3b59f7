package main

import (
	"context"
	"os/exec"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/internal/testenv"
)

// With leader election the controller holds the provisioner's Lease and
// the status Lease, and on SIGTERM releases both and exits 0, so another
// replica leads at once instead of after the leases expire. (The
// provisioner library's own election exited 1 and left its Lease held.)
func TestLeasesReleasedOnStop(t *testing.T) {
	srv := kubetest.Start(t)
	kube := srv.Client(t)
	mustCreate(t, kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "modelcache-system"}})
	srv.InstallCRDs(t) // else the status controller has nothing to do and takes no Lease
	cmd := exec.Command(controller.Build(t), "--kubeconfig", srv.Kubeconfig(t), "--metrics-addr", "")
	cmd.Env = append(testenv.OutsideCluster(), "POD_NAMESPACE=modelcache-system")
	p := testenv.Start(t, cmd)

	holder := func(name string) string {
		l, err := kube.CoordinationV1().Leases("modelcache-system").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	leases := []string{"modelcache.csi.io", statusLease}
	waitFor(t, "both Leases held", func() bool { return holder(leases[0]) != "" && holder(leases[1]) != "" })
	p.Stop(t) // fails unless the exit status is 0
	for _, name := range leases {
		if h := holder(name); h != "" {
			t.Errorf("Lease %s still held by %s after SIGTERM\n%s", name, h, p.Out.String())
		}
	}
}
