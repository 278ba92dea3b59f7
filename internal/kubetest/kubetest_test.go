package kubetest_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// TestServer creates, patches and reads back a Node: the API server and etcd
// behind it work, and the token is an admin's.
func TestServer(t *testing.T) {
	s := kubetest.Start(t)
	t.Logf("startup took %s", s.StartupTime)
	c := s.Client(t)
	ctx := context.Background()
	if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kubetest-node"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"a":"b"}}}`)
	if _, err := c.CoreV1().Nodes().Patch(ctx, "kubetest-node", "application/strategic-merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := c.CoreV1().Nodes().Get(ctx, "kubetest-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["a"] != "b" {
		t.Fatalf("labels after patch: %v", n.Labels)
	}
	// The unprivileged user is authenticated and denied until RBAC allows.
	user, err := kubernetes.NewForConfig(s.UserConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.CoreV1().Nodes().Get(ctx, "kubetest-node", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("unprivileged get node: %v, want Forbidden", err)
	}
	if s2 := kubetest.Start(t); s2 != s {
		t.Fatal("a second Start started another server")
	}
}
