package csi_test

import (
	"cmp"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
)

// fakeAgent answers from fields and records pins; the integration tests use
// the real agent, this one reaches the failure paths a real one rarely takes.
type fakeAgent struct {
	mu       sync.Mutex
	progress agentapi.Progress
	ensure   error
	pinErr   error
	pinPath  string            // when set, the path Pin answers instead of progress.Path
	pins     map[string]string // holder → ref
}

func (f *fakeAgent) Ensure(context.Context, string, agentapi.EnsureOptions, func(agentapi.Progress)) (agentapi.Progress, error) {
	return f.progress, f.ensure
}

func (f *fakeAgent) Pin(_ context.Context, ref, holder string) (agentapi.PinResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pinErr != nil {
		return agentapi.PinResponse{}, f.pinErr
	}
	f.pins[holder] = ref
	return agentapi.PinResponse{Ref: ref, Revision: f.progress.Revision, Path: cmp.Or(f.pinPath, f.progress.Path)}, nil
}

func (f *fakeAgent) Unpin(_ context.Context, _, holder string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pins, holder)
	return nil
}

func (f *fakeAgent) Status(context.Context) (agentapi.StatusReport, error) {
	return agentapi.StatusReport{}, nil
}
func (f *fakeAgent) Healthy(context.Context) error { return nil }

// newUnit returns a node driver over a fakeAgent whose model is the existing
// directory <cache>/models/x/rev of a temporary cache (see unitCache).
func newUnit(t *testing.T) (*csi.Driver, *fakeAgent, *mounter.Fake, string) {
	t.Helper()
	state := t.TempDir()
	cacheDir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(cacheDir, "models", "x", "rev")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{pins: map[string]string{},
		progress: agentapi.Progress{Ref: "s3://bkt/m", State: agentapi.StateReady, Revision: "0123456789abcdef", Path: tree}}
	fm := mounter.NewFake()
	d, err := csi.New(csi.Options{NodeID: "n", Node: true, Agent: fa, Mounter: fm, StateDir: state, CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	return d, fa, fm, state
}

// unitCache is the cache directory of a newUnit driver.
func unitCache(fa *fakeAgent) string {
	return filepath.Dir(filepath.Dir(filepath.Dir(fa.progress.Path)))
}

func unitReq() *csipb.NodePublishVolumeRequest {
	return &csipb.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "/pods/v/mount",
		VolumeCapability: mountCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY),
		VolumeContext:    map[string]string{"model": "s3://bkt/m"}}
}

func TestUnitPublishMountsThePinnedTree(t *testing.T) {
	d, fa, fm, _ := newUnit(t)
	if _, err := d.NodePublishVolume(context.Background(), unitReq()); err != nil {
		t.Fatal(err)
	}
	if got := fm.Source("/pods/v/mount"); got != fa.progress.Path {
		t.Fatalf("mounted %q", got)
	}
	for h, ref := range fa.pins {
		if !strings.Contains(ref, "revision=0123456789abcdef") || !strings.HasPrefix(h, "csi:v@") {
			t.Fatalf("pin %s → %s: want the exact revision, held by the volume", h, ref)
		}
	}
}

func TestUnitFailedMountDropsPinAndRecord(t *testing.T) {
	d, fa, fm, state := newUnit(t)
	fm.Err = errors.New("mount: permission denied")
	_, err := d.NodePublishVolume(context.Background(), unitReq())
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("publish with a failing mount: %v", err)
	}
	if len(fa.pins) != 0 {
		t.Fatalf("pins left: %v", fa.pins)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("records left: %d", len(ents))
	}
}

func TestUnitAgentErrorsBecomeCodes(t *testing.T) {
	cases := []struct {
		ensure error
		pin    error
		state  agentapi.State
		want   codes.Code
	}{
		{ensure: agentapi.ErrAccessDenied, want: codes.PermissionDenied},
		{ensure: agentapi.ErrNotFound, want: codes.NotFound},
		{ensure: agentapi.ErrNoSpace, want: codes.ResourceExhausted},
		{ensure: agentapi.ErrUnreachable, want: codes.Unavailable},
		{ensure: agentapi.ErrUnavailable, want: codes.Unavailable},
		{ensure: agentapi.ErrInvalid, want: codes.InvalidArgument},
		{ensure: agentapi.ErrInternal, want: codes.Internal},
		{state: agentapi.StateFetching, want: codes.Unavailable},
		{pin: agentapi.ErrNotFound, want: codes.Unavailable}, // evicted between ensure and pin
	}
	for _, c := range cases {
		d, fa, fm, state := newUnit(t)
		fa.ensure, fa.pinErr = c.ensure, c.pin
		if c.state != "" {
			fa.progress.State = c.state
		}
		_, err := d.NodePublishVolume(context.Background(), unitReq())
		if status.Code(err) != c.want {
			t.Errorf("ensure %v pin %v state %q: %v, want %s", c.ensure, c.pin, c.state, err, c.want)
		}
		if fm.Source("/pods/v/mount") != "" || len(fa.pins) != 0 {
			t.Errorf("ensure %v pin %v: something mounted or pinned", c.ensure, c.pin)
		}
		if ents, _ := os.ReadDir(state); len(ents) != 0 {
			t.Errorf("ensure %v pin %v: %d records left", c.ensure, c.pin, len(ents))
		}
	}
}

func TestUnitControllerCreateVolume(t *testing.T) {
	d, err := csi.New(csi.Options{Controller: true})
	if err != nil {
		t.Fatal(err)
	}
	req := &csipb.CreateVolumeRequest{Name: "pvc-1",
		VolumeCapabilities: []*csipb.VolumeCapability{mountCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)},
		Parameters:         map[string]string{"model": "s3://bkt/m", "source": "minio", "csi.storage.k8s.io/pvc/name": "x"}}
	r1, err := d.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := d.CreateVolume(context.Background(), req)
	if r1.Volume.VolumeId != r2.Volume.VolumeId {
		t.Fatal("CreateVolume is not idempotent")
	}
	if got := r1.Volume.VolumeContext["model"]; got != "s3://bkt/m?source=minio" {
		t.Fatalf("volume context model = %q", got)
	}
	req.Parameters = map[string]string{"model": "s3://bkt/../x"}
	if _, err := d.CreateVolume(context.Background(), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad model: %v", err)
	}
	req.Parameters = map[string]string{}
	if _, err := d.CreateVolume(context.Background(), req); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "model") {
		t.Fatalf("no model: %v", err)
	}
}
