package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	regapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildPlugin builds the binary once per test run: linking client-go takes
// tens of seconds on two shared cores.
func buildPlugin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "csi-plugin-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "csi-plugin")
		out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

func TestBadFlags(t *testing.T) {
	bin := buildPlugin(t)
	out, err := exec.Command(bin, "--mode", "bogus", "--metrics-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--mode "bogus"`) {
		t.Fatalf("bad mode: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--endpoint", "tcp://0.0.0.0:1", "--mode", "controller", "--provisioner=false", "--metrics-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unix://") {
		t.Fatalf("bad endpoint: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--publish-wait") || !strings.Contains(string(out), "--kubelet-registration") {
		t.Fatalf("help: %v\n%s", err, out)
	}
}

// TestServeRegistersWithKubelet runs the plugin as the DaemonSet does and
// plays kubelet: it finds the registration socket, asks where the CSI socket
// is, and talks CSI to it.
func TestServeRegistersWithKubelet(t *testing.T) {
	bin := buildPlugin(t)
	dir, err := os.MkdirTemp("", "mc-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	kubelet := filepath.Join(dir, "kubelet")
	csiSock := filepath.Join(kubelet, "plugins", "modelcache.csi.io", "csi.sock")
	cmd := exec.Command(bin, "--endpoint", "unix://"+csiSock, "--node-id", "node-7",
		"--agent-socket", filepath.Join(dir, "no-agent.sock"), "--state-dir", filepath.Join(dir, "state"),
		"--kubelet-dir", kubelet, "--metrics-addr", "127.0.0.1:0")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	regSock := filepath.Join(kubelet, "plugins_registry", "modelcache.csi.io-reg.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, e1 := os.Stat(regSock)
		_, e2 := os.Stat(csiSock)
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets not created\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := context.Background()
	rc, err := grpc.NewClient("unix://"+regSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	info, err := regapi.NewRegistrationClient(rc).GetInfo(ctx, &regapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != "CSIPlugin" || info.Name != "modelcache.csi.io" || info.Endpoint != csiSock {
		t.Fatalf("registration info %+v, want CSIPlugin modelcache.csi.io at %s", info, csiSock)
	}
	if _, err := regapi.NewRegistrationClient(rc).NotifyRegistrationStatus(ctx,
		&regapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}

	cc, err := grpc.NewClient("unix://"+info.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pi, err := csipb.NewIdentityClient(cc).GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil || pi.Name != "modelcache.csi.io" || pi.VendorVersion != "v9.9.9-test" {
		t.Fatalf("plugin info %v, %v", pi, err)
	}
	pr, err := csipb.NewIdentityClient(cc).Probe(ctx, &csipb.ProbeRequest{})
	if err != nil || pr.GetReady().GetValue() {
		t.Fatalf("probe without an agent: %v, %v; want not ready", pr, err)
	}
	ni, err := csipb.NewNodeClient(cc).NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil || ni.NodeId != "node-7" {
		t.Fatalf("node info %v, %v", ni, err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", logs.String())
	}
	for _, p := range []string{regSock, csiSock} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}
