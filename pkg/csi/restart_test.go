package csi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
)

func TestAgentRestartKeepsPins(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	e.srv.Put(t, "models", "m/w.bin", s3test.RandomBytes(5, 1<<20))
	for _, v := range []string{"a", "b"} {
		if err := e.publish(v, e.ref("m")); err != nil {
			t.Fatal(err)
		}
	}
	before := e.pins()
	slices.Sort(before)

	e.stopAgent()
	// While the agent is down the plugin is not ready, yet a pod can still
	// leave: unpublish unmounts and the unpin waits for reconciliation.
	if r, err := e.identity.Probe(context.Background(), nil); err != nil || r.GetReady().GetValue() {
		t.Fatalf("probe with the agent down: %v, %v; want not ready", r, err)
	}
	// The container's probes: alive (no restart of the plugin for an agent
	// that is down), not ready.
	health := httptest.NewServer(e.driver.HealthHandler())
	defer health.Close()
	if code := httpStatus(t, health.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with the agent down: %d, want 200", code)
	}
	if code := httpStatus(t, health.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the agent down: %d, want 503", code)
	}
	if err := e.unpublish("b"); err != nil {
		t.Fatalf("unpublish with the agent down: %v", err)
	}
	e.startAgent()
	if code := httpStatus(t, health.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with the agent up: %d, want 200", code)
	}

	after := e.pins()
	slices.Sort(after)
	if !slices.Equal(before, after) {
		t.Fatalf("pins after agent restart %q, want %q", after, before)
	}
	if err := e.driver.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := e.pins(); len(p) != 1 || p[0] != before[0] {
		t.Fatalf("after reconcile pins = %q, want only volume a's %q", p, before[0])
	}
	b, _ := os.ReadFile(filepath.Join(e.target("a"), "w.bin"))
	if len(b) != 1<<20 {
		t.Fatalf("volume a reads %d bytes after the restart", len(b))
	}

	// An agent that lost a pin (state restored from an old backup, say) gets
	// it back from the plugin's records.
	if err := e.client.Unpin(context.Background(), e.ref("m"), before[0]); err != nil {
		t.Fatal(err)
	}
	if err := e.driver.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := e.pins(); len(p) != 1 {
		t.Fatalf("pins after reconcile of a lost pin: %q", p)
	}
}

func TestPluginRestartKeepsPins(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	e.srv.Put(t, "models", "m/w.bin", s3test.RandomBytes(6, 1<<20))
	for _, v := range []string{"a", "b", "c"} {
		if err := e.publish(v, e.ref("m")); err != nil {
			t.Fatal(err)
		}
	}
	e.stopPlugin()
	// While the plugin is away: kubelet's cleanup or an operator unmounted
	// volume b (a plugin crash after the unmount and before the unpin
	// leaves the same state), and a stray csi: pin with no volume appeared.
	if err := mounter.New().Unmount(e.target("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Pin(context.Background(), e.ref("m"), "csi:ghost@00000000"); err != nil {
		t.Fatal(err)
	}
	e.startPlugin()
	if err := e.driver.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	pins := e.pins()
	if len(pins) != 2 {
		t.Fatalf("pins after plugin restart %q, want volumes a and c only", pins)
	}
	for _, v := range []string{"a", "c"} {
		if ok, _ := mounter.New().IsMounted(e.target(v)); !ok {
			t.Fatalf("volume %s lost its mount", v)
		}
		if err := e.unpublish(v); err != nil {
			t.Fatal(err)
		}
	}
	if p := e.pins(); len(p) != 0 {
		t.Fatalf("pins left after unpublishing through the new plugin: %q", p)
	}
	if ents, _ := os.ReadDir(e.stateDir); len(ents) != 0 {
		t.Fatalf("%d volume records left", len(ents))
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
