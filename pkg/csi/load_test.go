package csi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agentapi"
)

// 1,000 publish/unpublish cycles over 20 volumes while other models are
// prefetched and evicted, and the published model itself is evicted whenever
// no volume pins it: afterwards no mount, pin, goroutine or file descriptor
// is left over (plugin and agent run in this process, so both are counted).
func TestLoadLeavesNothingBehind(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	for i := range 3 {
		e.srv.Put(t, "models", fmt.Sprintf("m/part-%d.bin", i), s3test.RandomBytes(uint64(20+i), 1<<20))
		e.srv.Put(t, "models", fmt.Sprintf("other-%d/w.bin", i), s3test.RandomBytes(uint64(30+i), 2<<20))
	}
	// Warm-up: one cycle, so the baseline holds the plugin's and agent's
	// long-lived goroutines and descriptors.
	if err := e.publish("warm", e.ref("m")); err != nil {
		t.Fatal(err)
	}
	if err := e.unpublish("warm"); err != nil {
		t.Fatal(err)
	}
	goBefore, fdBefore := settle(e)

	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	var bgOps [3]int
	bg.Go(func() { // prefetches
		for i := 0; ctx.Err() == nil; i++ {
			e.client.Ensure(ctx, e.ref(fmt.Sprintf("other-%d", i%3)), agentapi.EnsureOptions{Wait: 5 * time.Second}, nil)
			bgOps[0]++
		}
	})
	bg.Go(func() { // evictions, of the volumes' model too: only unpinned revisions go
		for i := 0; ctx.Err() == nil; i++ {
			e.client.Evict(ctx, e.ref(fmt.Sprintf("other-%d", i%3)))
			if ev, _ := e.client.Evict(ctx, e.ref("m")); len(ev) > 0 {
				bgOps[2]++
			}
			bgOps[1]++
			time.Sleep(2 * time.Millisecond)
		}
	})

	const volumes, cycles = 20, 50
	var wg sync.WaitGroup
	errs := make(chan error, volumes)
	var retries sync.Map
	for v := range volumes {
		wg.Go(func() {
			vol := fmt.Sprintf("load-%02d", v)
			for c := range cycles {
				for {
					err := e.publish(vol, e.ref("m"))
					if err == nil {
						break
					}
					// Evicted between ensure and pin, or being fetched again
					// after an eviction: kubelet retries these.
					if status.Code(err) != codes.Unavailable {
						errs <- fmt.Errorf("%s cycle %d: publish: %w", vol, c, err)
						return
					}
					n, _ := retries.LoadOrStore(vol, new(int))
					*n.(*int)++
					time.Sleep(10 * time.Millisecond)
				}
				if _, err := os.Stat(filepath.Join(e.target(vol), "part-1.bin")); err != nil {
					errs <- fmt.Errorf("%s cycle %d: read: %w", vol, c, err)
					return
				}
				if err := e.unpublish(vol); err != nil {
					errs <- fmt.Errorf("%s cycle %d: unpublish: %w", vol, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	cancel()
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	unavailable := 0
	retries.Range(func(_, n any) bool { unavailable += *n.(*int); return true })
	t.Logf("%d cycles; %d prefetches and %d eviction rounds meanwhile, %d of which evicted the volumes' model; %d publishes retried after Unavailable",
		volumes*cycles, bgOps[0], bgOps[1], bgOps[2], unavailable)

	if m := mountsUnder(t, e.dir); len(m) != 0 {
		t.Errorf("mounts left: %q", m)
	}
	if p := e.pins(); len(p) != 0 {
		t.Errorf("pins left: %q", p)
	}
	// A prefetch whose caller left goes on in the agent: let it end.
	waitFor(t, 30*time.Second, func() bool {
		st, err := e.client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range st.Jobs {
			if j.State == agentapi.StateFetching || j.State == agentapi.StateListing {
				return false
			}
		}
		return true
	})
	goAfter, fdAfter := settle(e)
	if goAfter > goBefore || fdAfter > fdBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d → %d, file descriptors %d → %d\n%s", goBefore, goAfter, fdBefore, fdAfter,
			buf[:runtime.Stack(buf, true)])
	}
}

// settle closes idle connections (plugin to agent, agent to the proxy,
// proxy to S3, which keeps them alive: pooled, not leaked) and waits for
// the goroutine and descriptor counts to stop falling; it returns them.
func settle(e *env) (goroutines, fds int) {
	e.client.CloseIdleConnections()
	e.s3http.CloseIdleConnections()
	e.proxy.CloseIdleConnections()
	count := func() (int, int) {
		d, _ := os.ReadDir("/proc/self/fd")
		return runtime.NumGoroutine(), len(d)
	}
	goroutines, fds = count()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		g, f := count()
		if g == goroutines && f == fds {
			return g, f
		}
		goroutines, fds = g, f
	}
	return goroutines, fds
}

func mountsUnder(t *testing.T, dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}
