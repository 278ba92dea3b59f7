package cache

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestGroupSync: concurrent callers all get a sync that began after their
// call, share fsyncs, and see a failing directory's error.
func TestGroupSync(t *testing.T) {
	g := newGroupSync(t.TempDir())
	var wg sync.WaitGroup
	const callers = 64
	for range callers {
		wg.Go(func() {
			want := func() uint64 { g.mu.Lock(); defer g.mu.Unlock(); return g.started + 1 }()
			if err := g.Sync(); err != nil {
				t.Error(err)
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.done < want {
				t.Errorf("Sync returned after fsync %d, want one begun after the call (%d)", g.done, want)
			}
		})
	}
	wg.Wait()
	if g.started > callers || g.running {
		t.Fatalf("%d fsyncs for %d callers (running %v)", g.started, callers, g.running)
	}
	t.Logf("%d callers, %d fsyncs", callers, g.started)

	gone := newGroupSync(filepath.Join(t.TempDir(), "missing"))
	if err := gone.Sync(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sync of a missing directory: %v", err)
	}
}
