package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	regapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/modelcache/modelcache/internal/testenv"
)

// plugin is built once per test run: linking gRPC takes a while on two
// shared cores.
var plugin = &testenv.Command{Name: "csi-plugin", LDFlags: "-X main.version=v9.9.9-test"}

func TestMain(m *testing.M) {
	code := m.Run()
	plugin.Remove()
	os.Exit(code)
}

func TestBadFlags(t *testing.T) {
	bin := plugin.Build(t)
	out, err := exec.Command(bin, "--mode", "bogus", "--metrics-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--mode "bogus"`) {
		t.Fatalf("bad mode: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--endpoint", "tcp://0.0.0.0:1", "--mode", "controller", "--metrics-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unix://") {
		t.Fatalf("bad endpoint: %v\n%s", err, out)
	}
	// The built-in provisioner's flags are gone; the error says where to.
	for _, f := range []string{"--provisioner=true", "--leader-election=true", "--kubeconfig=/etc/kubeconfig"} {
		out, err = exec.Command(bin, "--mode", "controller", f, "--metrics-addr", "").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unknown flag") || !strings.Contains(string(out), "moved to the command modelcache-controller") {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	out, err = exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--publish-wait") || !strings.Contains(string(out), "--kubelet-registration") ||
		!strings.Contains(string(out), "modelcache-controller") || strings.Contains(string(out), "--provisioner") {
		t.Fatalf("help: %v\n%s", err, out)
	}
}

// TestControllerMode: --mode=controller serves the CSI Controller service
// for the external-provisioner sidecar, with no API server anywhere.
func TestControllerMode(t *testing.T) {
	bin := plugin.Build(t)
	dir, err := os.MkdirTemp("", "mc-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "csi.sock")
	cmd := exec.Command(bin, "--mode", "controller", "--endpoint", "unix://"+sock, "--metrics-addr", "")
	cmd.Env = testenv.OutsideCluster()
	p := testenv.Start(t, cmd)
	logs := &p.Out
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket not created\n%s", logs.String())
		}
	}
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := context.Background()
	caps, err := csipb.NewControllerClient(cc).ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
	if err != nil || !strings.Contains(caps.String(), "CREATE_DELETE_VOLUME") {
		t.Fatalf("controller capabilities %v, %v", caps, err)
	}
	cv, err := csipb.NewControllerClient(cc).CreateVolume(ctx, &csipb.CreateVolumeRequest{
		Name:       "pvc-1",
		Parameters: map[string]string{"model": "s3://models/llama"},
		VolumeCapabilities: []*csipb.VolumeCapability{{
			AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
		}},
	})
	if err != nil || cv.GetVolume().GetVolumeContext()["model"] != "s3://models/llama" {
		t.Fatalf("CreateVolume: %v, %v\n%s", cv, err, logs.String())
	}
	p.Stop(t)
}

// TestServeRegistersWithKubelet runs the plugin as the DaemonSet does and
// plays kubelet: it finds the registration socket, asks where the CSI socket
// is, and talks CSI to it.
func TestServeRegistersWithKubelet(t *testing.T) {
	bin := plugin.Build(t)
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
	p := testenv.Start(t, cmd)
	logs := &p.Out

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

	p.Stop(t)
	for _, p := range []string{regSock, csiSock} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}
