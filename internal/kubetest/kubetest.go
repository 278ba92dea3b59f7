// Package kubetest runs a real Kubernetes API server for integration tests:
// an etcd process (Debian's etcd-server) and a kube-apiserver process
// (bin/k8s/kube-apiserver, built by hack/kube-build.sh) on free loopback
// ports, with a static bearer token in group system:masters and a serving
// certificate the API server makes for itself. No controllers, scheduler or
// kubelet run: tests create Nodes and workloads as plain API objects.
//
// One server serves a whole test binary: call Main from TestMain, then Start
// in each test. Tests share it, so each should use its own namespace and
// object names.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/modelcache/modelcache/internal/testenv"
)

// User is the name of an unprivileged user of every Server: it may do only
// what RBAC objects the test creates grant it.
const User = "kubetest-user"

// Server is a running API server.
type Server struct {
	// Config reaches the API server as a cluster admin (insecure TLS: the
	// serving certificate is self-signed).
	Config *rest.Config
	// UserConfig reaches it as User.
	UserConfig *rest.Config
	// StartupTime is how long etcd and the API server took to become ready.
	StartupTime time.Duration

	dir   string
	procs []*process
}

// Client returns a clientset for s.Config; it fails the test on error.
func (s *Server) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	mu      sync.Mutex
	shared  *Server
	failure error // the shared server failed to start; every test reports it
	inMain  bool
)

// Main runs the tests of m and stops the shared server (if one was
// started) before exiting. Call it from TestMain.
func Main(m *testing.M) {
	mu.Lock()
	inMain = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.Stop()
	}
	mu.Unlock()
	os.Exit(code)
}

// Start returns the test binary's API server, starting it on first use
// (without TestMain calling Main, the server is stopped when t ends). When a
// binary is missing the test is skipped, or fails if MODELCACHE_REQUIRE=1.
func Start(t testing.TB) *Server {
	t.Helper()
	etcd, apiserver := binaries(t)
	mu.Lock()
	defer mu.Unlock()
	if failure != nil {
		t.Fatalf("kubetest: %v", failure)
	}
	if shared != nil {
		return shared
	}
	s, err := start(etcd, apiserver)
	if err != nil {
		failure = err
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: etcd and kube-apiserver ready in %s", s.StartupTime.Round(time.Millisecond))
	if inMain {
		shared = s
	} else {
		t.Cleanup(s.Stop)
	}
	return s
}

// binaries finds etcd ($MODELCACHE_ETCD, else PATH) and kube-apiserver
// ($MODELCACHE_KUBE_APISERVER, else <repo>/bin/k8s/kube-apiserver).
func binaries(t testing.TB) (etcd, apiserver string) {
	t.Helper()
	var missing []string
	etcd = os.Getenv("MODELCACHE_ETCD")
	if etcd == "" {
		if p, err := exec.LookPath("etcd"); err == nil {
			etcd = p
		} else {
			missing = append(missing, "etcd (Debian package etcd-server; `make tools` installs it)")
		}
	}
	apiserver = os.Getenv("MODELCACHE_KUBE_APISERVER")
	if apiserver == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		apiserver = filepath.Join(root, "bin", "k8s", "kube-apiserver")
	}
	if _, err := os.Stat(apiserver); err != nil {
		missing = append(missing, apiserver+" (`make tools` builds it with hack/kube-build.sh)")
	}
	if len(missing) > 0 {
		msg := "kubetest: missing " + strings.Join(missing, " and ")
		testenv.Missing(t, msg)
	}
	return etcd, apiserver
}

func start(etcdBin, apiserverBin string) (*Server, error) {
	began := time.Now()
	// etcd fsyncs on every write; tmpfs keeps that cheap on a busy disk.
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "kubetest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	etcdURL, err := s.startEtcd(etcdBin)
	if err != nil {
		return nil, err
	}
	if err := s.startAPIServer(apiserverBin, etcdURL); err != nil {
		return nil, err
	}
	s.StartupTime = time.Since(began)
	ok = true
	return s, nil
}

func (s *Server) startEtcd(bin string) (string, error) {
	var lastErr error
	for range 5 {
		client, err1 := freePort()
		peer, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return "", err
		}
		cu := fmt.Sprintf("http://127.0.0.1:%d", client)
		pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
		data := filepath.Join(s.dir, fmt.Sprintf("etcd-%d", client))
		p, err := startProcess("etcd", bin, "--name", "kubetest", "--data-dir", data,
			"--listen-client-urls", cu, "--advertise-client-urls", cu,
			"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
			"--initial-cluster", "kubetest="+pu, "--log-level", "warn")
		if err != nil {
			return "", err
		}
		if err := p.waitHTTP(cu+"/health", nil, 30*time.Second); err != nil {
			p.stop()
			lastErr = err
			continue
		}
		s.procs = append(s.procs, p)
		return cu, nil
	}
	return "", fmt.Errorf("etcd did not start: %w", lastErr)
}

func (s *Server) startAPIServer(bin, etcdURL string) error {
	token, err1 := randomHex(16)
	userToken, err2 := randomHex(16)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	tokens := filepath.Join(s.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",kubetest-admin,kubetest-admin,system:masters\n"+
		userToken+","+User+","+User+"\n"), 0o600); err != nil {
		return err
	}
	saKey := filepath.Join(s.dir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return err
		}
		certDir := filepath.Join(s.dir, fmt.Sprintf("certs-%d", port))
		p, err := startProcess("kube-apiserver", bin,
			"--etcd-servers", etcdURL,
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
			"--secure-port", fmt.Sprint(port), "--cert-dir", certDir,
			"--token-auth-file", tokens, "--authorization-mode", "RBAC",
			"--service-account-issuer", "https://kubernetes.default.svc",
			"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
			"--service-cluster-ip-range", "10.96.0.0/16", "--endpoint-reconciler-type", "none",
			"--enable-priority-and-fairness=false", "--profiling=false", "--v", "0",
			// As on a cluster that runs CSI node plugins (e2e/up.sh too): the
			// DaemonSet of deploy/ has a privileged container.
			"--allow-privileged=true")
		if err != nil {
			return err
		}
		host := fmt.Sprintf("https://127.0.0.1:%d", port)
		hdr := http.Header{"Authorization": {"Bearer " + token}}
		if err := p.waitHTTP(host+"/readyz", hdr, 90*time.Second); err != nil {
			p.stop()
			lastErr = err
			if strings.Contains(p.out.String(), "address already in use") {
				continue
			}
			break
		}
		s.procs = append(s.procs, p)
		s.Config = &rest.Config{Host: host, BearerToken: token,
			TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
		s.UserConfig = rest.CopyConfig(s.Config)
		s.UserConfig.BearerToken = userToken
		return nil
	}
	return fmt.Errorf("kube-apiserver did not start: %w", lastErr)
}

// Stop stops the API server, then etcd, and removes their data.
func (s *Server) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
	s.procs = nil
	os.RemoveAll(s.dir)
}

func writeRSAKey(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return os.WriteFile(path, b, 0o600)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type process struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

func startProcess(name, bin string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// If the test binary dies (a timeout, ^C) the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{name: name, cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

// waitHTTP polls url until it answers 200.
func (p *process) waitHTTP(url string, hdr http.Header, timeout time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: insecureTransport()}
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited at start: %s", p.name, p.out.tail())
		default:
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := c.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = resp.Status
	}
	return fmt.Errorf("%s not ready at %s within %s (last: %s): %s", p.name, url, timeout, last, p.out.tail())
}

// stop sends SIGTERM, then SIGKILL if the process has not exited in 10s.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail is the last few KiB of output, for error messages.
func (s *syncBuffer) tail() string {
	out := s.String()
	if len(out) > 4096 {
		out = "…" + out[len(out)-4096:]
	}
	return out
}

// insecureTransport trusts any certificate: the API server's is self-signed
// and only ever reached on loopback.
func insecureTransport() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // loopback test server
}
