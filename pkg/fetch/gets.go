package fetch

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
)

// gets bounds the ranged GETs in flight across every Fetch of a Fetcher
// (the agent's whole download traffic) and holds their read buffers: a
// worker takes a buffer for each part and gives it back when the part is
// written. Without it each of --max-downloads models ran its own
// --concurrency GETs, so four models at once had 64 connections, 64
// buffers (the agent's peak RSS went from 44 to 63 MiB) and, with 16 parts
// of one file in flight per model, most parts written ahead of the file's
// in-order hash, to be read back for it. A channel's waiting receivers are
// served in arrival order, so the models downloading at once share the
// GETs fairly: each worker that wants a buffer queues behind those that
// asked before it.
//
// Buffers are mapped when first taken and unmapped when the last Fetch
// that uses them ends, so an idle agent holds none.
type gets struct {
	bufs chan []byte // cap = concurrency; nil until first taken

	mu    sync.Mutex
	users int // Fetch calls in progress
}

func newGets(n int) *gets {
	g := &gets{bufs: make(chan []byte, n)}
	for range n {
		g.bufs <- nil
	}
	return g
}

// enter is called when a Fetch starts, leave when it ends (after every
// buffer it took is given back).
func (g *gets) enter() {
	g.mu.Lock()
	g.users++
	g.mu.Unlock()
}

func (g *gets) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.users--; g.users > 0 {
		return
	}
	// No Fetch runs, and a new one waits for mu in enter: every buffer is
	// in the channel.
	free := make([][]byte, 0, cap(g.bufs))
	for range cap(g.bufs) {
		free = append(free, <-g.bufs)
	}
	for _, b := range free {
		unmapBuffer(b)
		g.bufs <- nil
	}
}

// take waits for a free buffer (a GET slot); false if ctx ends first.
func (g *gets) take(ctx context.Context) ([]byte, bool) {
	select {
	case b := <-g.bufs:
		if b == nil {
			b = mapBuffer()
		}
		return b, true
	case <-ctx.Done():
		return nil, false
	}
}

func (g *gets) give(b []byte) { g.bufs <- b }

// mapBuffer returns a read buffer of bufferSize mapped outside the Go
// heap: inside it, the buffers were most of the live heap (4 of 6.5 MB
// with 16 workers), and the collector lets the heap grow to twice what is
// live, so each buffer cost twice its size in RSS (GODEBUG=gctrace=1 on
// fetch-profile). Nothing keeps a reference to a buffer after a part's
// bytes are written and hashed.
func mapBuffer() []byte {
	b, err := unix.Mmap(-1, 0, bufferSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, bufferSize)
	}
	return b
}

// unmapBuffer frees what mapBuffer returned; nil and heap buffers (the
// fallback when mmap fails) are left to the collector.
func unmapBuffer(b []byte) {
	if b != nil {
		_ = unix.Munmap(b) // EINVAL for a heap buffer: nothing to free
	}
}
