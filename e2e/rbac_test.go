//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRBAC: the ClusterRoles of deploy/ cover what the agent (the prefetch
// controller's watches and node patches) and the provisioner do with the
// API: no container's log says forbidden. It should run after the other
// tests (go test runs files in name order: keep it in a file named late).
func TestRBAC(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pods, err := e.kube.CoreV1().Pods("modelcache").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=modelcache"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("modelcache pods: %v (%d)", err, len(pods.Items))
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			b, err := e.kube.CoreV1().Pods("modelcache").GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil {
				t.Fatalf("logs of %s/%s: %v", p.Name, c.Name, err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "forbidden") {
					t.Errorf("%s/%s: %s", p.Name, c.Name, l)
				}
			}
		}
	}
}
