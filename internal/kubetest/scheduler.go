package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/testenv"
)

// StartScheduler runs the real kube-scheduler ($MODELCACHE_KUBE_SCHEDULER,
// else <repo>/bin/k8s/kube-scheduler) against s until t ends, with its
// default profile: pods get bound to the Node objects a test creates (no
// kubelet runs them). Missing: skipped, or failed under MODELCACHE_REQUIRE=1.
func (s *Server) StartScheduler(t testing.TB) {
	t.Helper()
	bin := testenv.Tool(t, "MODELCACHE_KUBE_SCHEDULER", "bin/k8s/kube-scheduler", "`make tools` builds it with hack/kube-build.sh")
	kc := s.Kubeconfig(t)
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		p, err := startProcess("kube-scheduler", bin, "--kubeconfig", kc, "--authentication-kubeconfig", kc,
			"--authorization-kubeconfig", kc, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port),
			"--leader-elect=false", "--v", "0")
		if err != nil {
			t.Fatal(err)
		}
		if last = p.waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/healthz", port), nil, 60*time.Second); last == nil {
			t.Cleanup(p.stop)
			return
		}
		p.stop()
	}
	t.Fatalf("kubetest: %v", last)
}

// Kubeconfig writes a kubeconfig of the server's administrator into a
// temporary file of t and returns its path, for another process.
func (s *Server) Kubeconfig(t testing.TB) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "admin.kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: kubetest, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: kubetest, context: {cluster: kubetest, user: admin}}]
current-context: kubetest
`, s.Config.Host, s.Config.BearerToken)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

// PID is the process ID of the server's etcd or kube-apiserver (0: none).
func (s *Server) PID(name string) int {
	for _, p := range s.procs {
		if p.name == name {
			return p.cmd.Process.Pid
		}
	}
	return 0
}
