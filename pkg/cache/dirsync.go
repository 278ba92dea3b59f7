package cache

import "sync"

// groupSync coalesces the fsyncs of one directory (blobs/) that concurrent
// commits ask for. Sync returns only after an fsync of the directory that
// began after Sync was called has completed, so the caller's rename is as
// durable as with its own fsync; but while one fsync runs, every commit
// that renamed meanwhile waits for the next one instead of queueing one
// each.
type groupSync struct {
	path string

	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // fsyncs begun
	done    uint64 // fsyncs finished (the newest, since one runs at a time)
	err     error  // of the newest finished fsync
}

func newGroupSync(path string) *groupSync {
	g := &groupSync{path: path}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync fsyncs the directory, or waits for an fsync that covers the call.
func (g *groupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A running fsync may have read the directory before our change: only
	// the next one to begin is sure to include it.
	want := g.started + 1
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := syncDir(g.path)
		g.mu.Lock()
		g.running = false
		g.done, g.err = gen, err
		g.cond.Broadcast()
	}
	return g.err
}
