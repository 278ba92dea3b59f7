package csi_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/internal/s3test"
)

// mountOptions returns target's per-mount options from mountinfo, "" if it
// is not a mount point.
func mountOptions(t *testing.T, target string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 5 && f[4] == target {
			opts = f[5]
		}
	}
	return opts
}

func TestPublishMountsReadOnly(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	weights := s3test.RandomBytes(7, 3<<20+17)
	e.srv.Put(t, "models", "llama/model.safetensors", weights)
	e.srv.Put(t, "models", "llama/config.json", []byte(`{"layers": 2}`))

	if err := e.publish("vol-1", e.ref("llama")); err != nil {
		t.Fatal(err)
	}
	target := e.target("vol-1")
	got, err := os.ReadFile(filepath.Join(target, "model.safetensors"))
	if err != nil || !bytes.Equal(got, weights) {
		t.Fatalf("read through mount: %d bytes, %v", len(got), err)
	}
	if err := os.WriteFile(filepath.Join(target, "evil"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("create in mount: %v, want EROFS", err)
	}
	if f, err := os.OpenFile(filepath.Join(target, "config.json"), os.O_WRONLY, 0); !errors.Is(err, unix.EROFS) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("open for write: %v, want EROFS", err)
	}
	opts := mountOptions(t, target)
	for _, want := range []string{"ro", "nosuid", "nodev"} {
		if !slices.Contains(strings.Split(opts, ","), want) {
			t.Errorf("mount options %q lack %s", opts, want)
		}
	}
	pins := e.pins()
	if len(pins) != 1 || !strings.Contains(pins[0], "ns/pod-vol-1") {
		t.Fatalf("pins = %q, want one naming the pod", pins)
	}

	// Idempotent: the same publish again is a no-op success.
	if err := e.publish("vol-1", e.ref("llama")); err != nil {
		t.Fatalf("second publish: %v", err)
	}
	// The same volume at the same target with another model is refused.
	e.srv.Put(t, "models", "other/x", []byte("x"))
	if err := e.publish("vol-1", e.ref("other")); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("publish of another model at a used target: %v, want AlreadyExists", err)
	}

	st, err := e.node.NodeGetVolumeStats(context.Background(),
		&csipb.NodeGetVolumeStatsRequest{VolumeId: "vol-1", VolumePath: target})
	if err != nil {
		t.Fatal(err)
	}
	if b := st.GetUsage()[0]; b.GetUsed() != int64(len(weights))+13 || b.GetUnit() != csipb.VolumeUsage_BYTES {
		t.Fatalf("stats %v", st)
	}

	for range 2 { // idempotent
		if err := e.unpublish("vol-1"); err != nil {
			t.Fatal(err)
		}
	}
	if mountOptions(t, target) != "" {
		t.Fatal("target still mounted after unpublish")
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target left behind: %v", err)
	}
	if p := e.pins(); len(p) != 0 {
		t.Fatalf("pins after unpublish: %q", p)
	}
	if ents, _ := os.ReadDir(e.stateDir); len(ents) != 0 {
		t.Fatalf("volume records left: %d", len(ents))
	}
}

func TestBadVolumesAreInvalidArgument(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	e.srv.Put(t, "models", "m/w", []byte("weights"))
	ok := e.publishReq("v", e.ref("m"))
	cases := []struct {
		name   string
		mutate func(r *csipb.NodePublishVolumeRequest)
		want   string
	}{
		{"no model", func(r *csipb.NodePublishVolumeRequest) { delete(r.VolumeContext, "model") }, "model"},
		{"malformed ref", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["model"] = "http://models/m" }, "s3://"},
		{"traversal", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["model"] = "s3://models/m/../../etc" }, ".."},
		{"absolute", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["model"] = "s3://models//etc/passwd" }, "model"},
		{"unknown attribute", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["modle"] = "x" }, "modle"},
		{"unknown source", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["model"] = "s3://models/m?source=nope" }, "nope"},
		{"bad revision", func(r *csipb.NodePublishVolumeRequest) { r.VolumeContext["revision"] = "../x" }, "revision"},
		{"block", func(r *csipb.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
		}, "Block"},
		{"multi writer", func(r *csipb.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
		}, "read-only"},
		{"rw flag", func(r *csipb.NodePublishVolumeRequest) {
			r.VolumeCapability.GetMount().MountFlags = []string{"rw"}
		}, "read-only"},
		{"no capability", func(r *csipb.NodePublishVolumeRequest) { r.VolumeCapability = nil }, "capability"},
		{"no volume id", func(r *csipb.NodePublishVolumeRequest) { r.VolumeId = "" }, "volume_id"},
		{"no target", func(r *csipb.NodePublishVolumeRequest) { r.TargetPath = "" }, "target_path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.publishReq("v", e.ref("m"))
			c.mutate(r)
			_, err := e.node.NodePublishVolume(context.Background(), r)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want InvalidArgument mentioning %q", err, c.want)
			}
			if mountOptions(t, ok.TargetPath) != "" {
				t.Fatal("something got mounted")
			}
		})
	}
	if p := e.pins(); len(p) != 0 {
		t.Fatalf("pins after refused publishes: %q", p)
	}
	if ents, _ := os.ReadDir(e.stateDir); len(ents) != 0 {
		t.Fatalf("volume records after refused publishes: %d", len(ents))
	}
}

func TestColdPublishReportsProgressThenOneDownload(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	const size = 24 << 20
	e.srv.Put(t, "models", "cold/weights.bin", s3test.RandomBytes(3, size))
	e.proxy.SetThrottle(8 << 20) // ~3 s: longer than the publish wait
	e.proxy.Reset()

	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = e.publish(volName(i), e.ref("cold")) })
	}
	wg.Wait()
	for i, err := range errs {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "fetching s3://models/cold") {
			t.Fatalf("cold publish %d: %v, want Unavailable with progress", i, err)
		}
	}
	t.Logf("kubelet would show: %s", status.Convert(errs[0]).Message())
	// kubelet uses the message as an Eventf format: no "%" may reach it.
	if msg := status.Convert(errs[0]).Message(); !strings.Contains(msg, " pct, ") || strings.Contains(msg, "%") {
		t.Errorf("message %q: want a percentage written without a percent sign", msg)
	}

	// kubelet retries every volume until it succeeds.
	deadline := time.Now().Add(60 * time.Second)
	for i := range n {
		for {
			err := e.publish(volName(i), e.ref("cold"))
			if err == nil {
				break
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				t.Fatalf("retry of %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	e.proxy.SetThrottle(0)
	for key, c := range e.proxy.GetCounts() {
		if c != 1 {
			t.Errorf("%s fetched %d times, want once", key, c)
		}
	}
	if got := e.proxy.BytesSent(); got != size {
		t.Errorf("server sent %d object bytes for %d volumes, want %d (one download)", got, n, size)
	}
	if p := e.pins(); len(p) != n {
		t.Fatalf("%d pins, want %d", len(p), n)
	}
	for i := range n {
		if err := e.unpublish(volName(i)); err != nil {
			t.Fatal(err)
		}
	}
	if p := e.pins(); len(p) != 0 {
		t.Fatalf("pins left: %q", p)
	}
}

func volName(i int) string { return "vol-" + string(rune('a'+i/26)) + string(rune('a'+i%26)) }
