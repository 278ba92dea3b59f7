package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/modelcache/modelcache/internal/testenv"
)

var controller = &testenv.Command{Name: "modelcache-controller", LDFlags: "-X main.version=v9.9.9-test"}

func TestMain(m *testing.M) {
	code := m.Run()
	controller.Remove()
	os.Exit(code)
}

// execute runs the command in-process with args.
func execute(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--provisioner=true"}, "unknown flag: --provisioner"},
		{[]string{"--mode", "controller"}, "unknown flag: --mode"},
		{[]string{"--endpoint", "unix:///csi/csi.sock"}, "unknown flag: --endpoint"},
		{[]string{"--leader-election=maybe"}, `invalid argument "maybe"`},
		{[]string{"serve"}, `unknown command "serve"`},
		{[]string{"--driver-name", "", "--metrics-addr", ""}, "--driver-name is empty"},
	} {
		if _, err := execute(tc.args...); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.err)
		}
	}
}

func TestHelp(t *testing.T) {
	out, err := execute("--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"model-cache StorageClass", "modelcache.io/model", "ProvisioningFailed",
		"--driver-name string", `(default "modelcache.csi.io")`, "--leader-election", "(default true)",
		"--kubeconfig", "--metrics-addr", `(default ":9092")`, "-v, --verbose", "--version"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

func TestAPIConfig(t *testing.T) {
	inCluster := func() (*rest.Config, error) { return &rest.Config{Host: "https://10.96.0.1:443"}, nil }
	outside := func() (*rest.Config, error) { return nil, rest.ErrNotInCluster }
	kubeconfig := writeKubeconfig(t, "https://127.0.0.1:6443")

	cfg, err := apiConfig("", inCluster)
	if err != nil || cfg.Host != "https://10.96.0.1:443" {
		t.Errorf("in a cluster: %+v, %v", cfg, err)
	}
	if cfg != nil && !strings.HasPrefix(cfg.UserAgent, "modelcache-controller/") {
		t.Errorf("user agent %q, want modelcache-controller/<version>", cfg.UserAgent)
	}
	if cfg, err = apiConfig(kubeconfig, outside); err != nil || cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("--kubeconfig: %+v, %v", cfg, err)
	}
	_, err = apiConfig("", outside)
	if err == nil || !strings.Contains(err.Error(), "needs the API server") || !strings.Contains(err.Error(), "--kubeconfig") ||
		!errors.Is(err, rest.ErrNotInCluster) {
		t.Errorf("outside a cluster: %v, want a clear error naming --kubeconfig", err)
	}
	if _, err = apiConfig("/nonexistent/kubeconfig", inCluster); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("missing kubeconfig: %v, want an error naming it", err)
	}
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(p, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+server+`"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBinary: the built command reports the -X main.version it was built
// with, and without an API server exits 1 saying what it needs.
func TestBinary(t *testing.T) {
	bin := controller.Build(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v9.9.9-test") {
		t.Errorf("--version: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--metrics-addr", "")
	cmd.Env = testenv.OutsideCluster()
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 ||
		!strings.HasPrefix(string(out), "error: modelcache-controller needs the API server") {
		t.Errorf("no API server: %v\n%s", err, out)
	}
}

// TestServesProbesAndStops runs the controller against an API server that
// is not there: it keeps retrying, serves its metrics and probes meanwhile,
// and exits 0 on SIGTERM.
func TestServesProbesAndStops(t *testing.T) {
	bin := controller.Build(t)
	// Port 1 of loopback: nothing listens, so every request is refused at once.
	cmd := exec.Command(bin, "--kubeconfig", writeKubeconfig(t, "https://127.0.0.1:1"),
		"--leader-election=false", "--metrics-addr", "127.0.0.1:0")
	cmd.Env = testenv.OutsideCluster()
	p := testenv.Start(t, cmd)
	logs := &p.Out

	addrRE := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; time.Sleep(50 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no metrics address logged\n%s", logs.String())
		}
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": "go_goroutines"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s\n%.300s", path, res.Status, body)
		}
	}

	p.Stop(t)
	if !strings.Contains(logs.String(), "provisioner starting") {
		t.Errorf("no start logged:\n%s", logs.String())
	}
}
