package csi_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
)

// layoutTraps adds to a newUnit cache what an agent could point a pin at
// that is not a model tree: a directory beside models/, a file, symlinks out.
func layoutTraps(t *testing.T, cache string) {
	t.Helper()
	models := filepath.Join(cache, "models")
	if err := os.MkdirAll(filepath.Join(cache, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(models, "x", "file"), []byte("not a tree"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"evil": "/etc", "x/up": "../../blobs", "x/loop": "..", "x/ok": "rev"}
	for link, to := range links {
		if err := os.Symlink(to, filepath.Join(models, link)); err != nil {
			t.Fatal(err)
		}
	}
}

// trapPaths are the paths of layoutTraps (and others) a publish must refuse.
var trapPaths = map[string]func(cache string) string{
	"host directory":                func(string) string { return "/etc" },
	"cache directory":               func(c string) string { return c },
	"models directory itself":       func(c string) string { return filepath.Join(c, "models") },
	"beside models":                 func(c string) string { return filepath.Join(c, "blobs") },
	"dot-dot out of models":         func(c string) string { return c + "/models/x/../../blobs" },
	"symlink under models to /etc":  func(c string) string { return filepath.Join(c, "models", "evil") },
	"symlink under models to blobs": func(c string) string { return filepath.Join(c, "models", "x", "up") },
	"symlink to models itself":      func(c string) string { return filepath.Join(c, "models", "x", "loop") },
	"a file":                        func(c string) string { return filepath.Join(c, "models", "x", "file") },
	"missing":                       func(c string) string { return filepath.Join(c, "models", "x", "gone") },
	"relative":                      func(string) string { return "models/x/rev" },
}

// The plugin is privileged and the agent is not: whatever path the agent
// answers for a pin, only a directory under the cache's models/ is mounted.
func TestUnitPublishMountsOnlyUnderModels(t *testing.T) {
	for name, pathOf := range trapPaths {
		t.Run(name, func(t *testing.T) {
			d, fa, fm, state := newUnit(t)
			layoutTraps(t, unitCache(fa))
			fa.pinPath = pathOf(unitCache(fa))
			_, err := d.NodePublishVolume(context.Background(), unitReq())
			if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), fa.pinPath) {
				t.Fatalf("publish of %q: %v, want Internal naming the path", fa.pinPath, err)
			}
			if len(fm.Calls) != 0 || fm.Source("/pods/v/mount") != "" {
				t.Fatalf("mounter called: %v", fm.Calls)
			}
			if len(fa.pins) != 0 {
				t.Fatalf("pins left: %v", fa.pins)
			}
			if ents, _ := os.ReadDir(state); len(ents) != 0 {
				t.Fatalf("%d records left", len(ents))
			}
		})
	}

	// A symlink that stays under models/ is followed, and what is mounted is
	// its target, so nothing is resolved again after the check.
	d, fa, fm, _ := newUnit(t)
	layoutTraps(t, unitCache(fa))
	fa.pinPath = filepath.Join(unitCache(fa), "models", "x", "ok")
	if _, err := d.NodePublishVolume(context.Background(), unitReq()); err != nil {
		t.Fatal(err)
	}
	if got := fm.Source("/pods/v/mount"); got != fa.progress.Path {
		t.Fatalf("mounted %q, want the resolved %q", got, fa.progress.Path)
	}
}

// The same with the real mounter: a symlink under models/ to /etc mounts
// nothing at the target.
func TestPublishRefusesSymlinkOutOfModels(t *testing.T) {
	needRoot(t)
	_, fa, _, _ := newUnit(t) // for its cache and agent
	layoutTraps(t, unitCache(fa))
	fa.pinPath = filepath.Join(unitCache(fa), "models", "evil")
	m := mounter.New()
	d, err := csi.New(csi.Options{NodeID: "n", Node: true, Agent: fa, Mounter: m, StateDir: t.TempDir(), CacheDir: unitCache(fa)})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "pods", "v", "mount")
	t.Cleanup(func() { m.Unmount(target) })
	req := unitReq()
	req.TargetPath = target
	req.VolumeCapability = mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	_, err = d.NodePublishVolume(context.Background(), req)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "/etc") {
		t.Fatalf("publish of a symlink to /etc: %v", err)
	}
	if mounted, err := m.IsMounted(target); err != nil || mounted {
		t.Fatalf("target mounted: %v %v", mounted, err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Fatalf("target shows %d entries", len(ents))
	}
}

// A node driver cannot be built without the cache directory: the check
// fails closed rather than being skipped.
func TestUnitNodeNeedsCacheDir(t *testing.T) {
	_, err := csi.New(csi.Options{NodeID: "n", Node: true, Agent: &fakeAgent{}, Mounter: mounter.NewFake(), StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "cache directory") {
		t.Fatalf("New without CacheDir: %v", err)
	}
}
