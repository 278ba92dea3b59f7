//go:build e2e

package e2e

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// throttle serves a TCP proxy to target on addr whose replies flow at most
// bytesPerSec in total: an S3 endpoint slow enough that a download outlasts
// the plugin's publish wait.
func throttle(t *testing.T, addr, target string, bytesPerSec int64) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("throttled proxy on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	next := time.Now() // when the next byte may be sent
	pace := func(n int) {
		mu.Lock()
		now := time.Now()
		if next.Before(now) {
			next = now
		}
		at := next
		next = next.Add(time.Duration(int64(n) * int64(time.Second) / bytesPerSec))
		mu.Unlock()
		time.Sleep(time.Until(at))
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				buf := make([]byte, 64<<10)
				for {
					n, err := u.Read(buf)
					if n > 0 {
						pace(n)
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
}

// publishLatency reads the plugin's modelcache_csi_publish_duration_seconds
// from its metrics endpoint: mean seconds and count per cache label (hit,
// miss). Empty when the endpoint does not answer.
func publishLatency(url string) map[string][2]float64 {
	out := map[string][2]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sums, counts := map[string]float64{}, map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(l, "{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		label := strings.TrimSuffix(strings.TrimPrefix(labels, `cache="`), `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "modelcache_csi_publish_duration_seconds_sum":
			sums[label] = v
		case "modelcache_csi_publish_duration_seconds_count":
			counts[label] = v
		}
	}
	for l, c := range counts {
		if c > 0 {
			out[l] = [2]float64{sums[l] / c, c}
		}
	}
	return out
}
