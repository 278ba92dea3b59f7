package agent

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

// warmChunk bounds the read buffer and the stretch of a file looked at at
// once (mincore vector); warmAhead is how far ahead of the reads the
// WILLNEED hint keeps the disk busy.
const (
	warmChunk = 4 << 20
	warmAhead = 64 << 20
)

// warmPageCache brings the files of the model tree at root into the page
// cache, so the inference server's first load reads memory, not disk. It
// is a hint in every sense: pages may be reclaimed again under memory
// pressure, files beyond the memory budget are skipped, and failures are
// reported, never fatal for the model. No file stays open afterwards.
//
// Per file: mincore(2) on a read-only mapping finds what is resident (after
// a download that is everything, and the warm-up costs milliseconds); the
// rest is announced with posix_fadvise(WILLNEED), which starts the reads
// across the whole stretch at once (far deeper than the sequential read-ahead
// of a plain read), then read with one bounded buffer, which returns once
// the pages are in.
func warmPageCache(ctx context.Context, root string) agentapi.WarmReport {
	start := time.Now()
	var rep agentapi.WarmReport
	err := warmTree(ctx, root, warmBudget(), &rep)
	rep.Seconds = time.Since(start).Seconds()
	if err != nil {
		rep.Error = err.Error()
	}
	return rep
}

func warmTree(ctx context.Context, root string, budget int64, rep *agentapi.WarmReport) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("warm page cache: %w", err)
	}
	buf := make([]byte, warmChunk)
	vec := make([]byte, warmChunk/os.Getpagesize())
	for _, p := range paths { // WalkDir's lexical order: shard 1 first
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("warm page cache: %w", err)
		}
		// Once something did not fit, the rest is only counted: warming a
		// later file would push out the earlier ones the server reads first.
		left := budget - rep.ReadBytes
		if rep.SkippedBytes > 0 {
			left = 0
		}
		size, err := warmFile(p, left, buf, vec, rep)
		rep.Files++
		rep.Bytes += size
		if err != nil {
			return fmt.Errorf("warm page cache: %s: %w", p, err)
		}
	}
	return nil
}

// warmFile warms one file within budget bytes and returns its size.
func warmFile(path string, budget int64, buf, vec []byte, rep *agentapi.WarmReport) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size == 0 {
		return 0, nil
	}
	fd := int(f.Fd())
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return size, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(mem)
	// First what is resident, before any hint of ours brings more in.
	page := int64(os.Getpagesize())
	missing := make([]int64, (size+warmChunk-1)/warmChunk) // bytes per chunk
	var need int64
	for c := range missing {
		off := int64(c) * warmChunk
		n := min(warmChunk, size-off)
		pages := (n + page - 1) / page
		if err := mincore(mem[off:off+n], vec[:pages]); err != nil {
			return size, fmt.Errorf("mincore: %w", err)
		}
		for i, v := range vec[:pages] {
			if v&1 == 0 {
				missing[c] += min(page, n-int64(i)*page)
			}
		}
		need += missing[c]
	}
	rep.ResidentBytes += size - need
	var hinted int64 // reads announced up to here
	for c, m := range missing {
		if m == 0 {
			continue
		}
		if m > budget {
			rep.SkippedBytes += need
			return size, nil
		}
		budget -= m
		need -= m
		off := int64(c) * warmChunk
		n := min(warmChunk, size-off)
		// The hint queues reads up to warmAhead beyond this chunk at once,
		// so the disk works on many requests while the buffer waits for the
		// first; pages already resident cost the hint nothing.
		if end := min(size, off+warmAhead, off+n+budget); end > hinted {
			from := max(hinted, off)
			unix.Fadvise(fd, from, end-from, unix.FADV_WILLNEED)
			hinted = end
		}
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return size, fmt.Errorf("read: %w", err)
		}
		rep.ReadBytes += m
	}
	return size, nil
}

// warmBudget is how many bytes a warm-up may bring into the page cache: what
// the kernel reports as available, less a quarter of the machine for the
// inference server that will load the model (its own buffers, the CPU copy
// before the GPU upload). Without /proc/meminfo there is no limit.
func warmBudget() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 1 << 62
	}
	defer f.Close()
	var total, avail int64 = -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = kib << 10
		case "MemAvailable":
			avail = kib << 10
		}
	}
	if total < 0 || avail < 0 {
		return 1 << 62
	}
	return max(0, avail-total/4)
}

// mincore fills vec with one byte per page of b, bit 0 set when the page is
// resident (x/sys/unix has no wrapper for it).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}

// warm runs a warm-up of the ready tree at path for one ensure and logs it.
func (a *Agent) warm(ctx context.Context, ref, path string) *agentapi.WarmReport {
	rep := warmPageCache(ctx, path)
	log := a.log.Info
	if rep.Error != "" {
		log = a.log.Warn
	}
	log("page cache warm-up", "ref", ref, "files", rep.Files, "bytes", rep.Bytes, "residentBytes", rep.ResidentBytes,
		"readBytes", rep.ReadBytes, "skippedBytes", rep.SkippedBytes, "seconds", rep.Seconds, "err", rep.Error)
	return &rep
}

// jobWarm is the one page-cache warm-up of a download, however many
// ensures ask for it (the prefetch controller asks twice: once to start,
// once to wait).
type jobWarm struct {
	once sync.Once
	done chan struct{}        // closed when the warm-up has ended or will not run
	rep  *agentapi.WarmReport // set before done is closed; nil if the download failed
}

// requestWarm makes sure the job's model is warmed once its download ends,
// in the background: a caller that stops waiting before that still gets
// its model in memory, and a caller that waits reads the report.
func (a *Agent) requestWarm(j *job) {
	j.warm.once.Do(func() {
		j.warm.done = make(chan struct{})
		a.wg.Go(func() {
			defer close(j.warm.done)
			select {
			case <-j.done:
			case <-a.ctx.Done():
				return
			}
			if j.err == nil {
				j.warm.rep = a.warm(a.ctx, j.ref.String(), j.model.Path)
			}
		})
	})
}
