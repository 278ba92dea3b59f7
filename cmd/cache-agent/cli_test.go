package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/internal/testenv"
	"github.com/modelcache/modelcache/pkg/agentapi"
)

// buildAgent compiles this command once per test binary run.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cache-agent")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type node struct {
	t       *testing.T
	bin     string
	dir     string
	socket  string
	sources string
	cmd     *exec.Cmd
	log     *testenv.Buffer // the agent's output; read while it runs
}

func newNode(t *testing.T, bin, endpoint string, srv *s3test.Server) *node {
	dir := t.TempDir()
	sources := filepath.Join(dir, "sources.yaml")
	os.WriteFile(sources, []byte(fmt.Sprintf(`sources:
  test:
    endpoint: %s
    region: %s
    pathStyle: true
    accessKeyID: %s
    secretAccessKey: %s
`, endpoint, srv.Region, srv.AccessKey, srv.SecretKey)), 0o600)
	return &node{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "agent.sock"), sources: sources}
}

func (n *node) start(extra ...string) {
	n.t.Helper()
	args := append([]string{"serve", "--socket", n.socket, "--cache-dir", filepath.Join(n.dir, "cache"),
		"--capacity", "1GiB", "--metrics-addr", "", "--sources-file", n.sources}, extra...)
	n.log = &testenv.Buffer{}
	n.cmd = exec.Command(n.bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	cmd := n.cmd
	n.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := agentapi.NewClient(n.socket)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c.Healthy(context.Background()) == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("agent did not come up:\n%s", n.log)
		}
	}
}

func (n *node) kill9() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
}

// run runs a CLI command against the node and returns its output and error.
func (n *node) run(args ...string) (string, error) {
	cmd := exec.Command(n.bin, append(args, "--socket", n.socket)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestKill9MidDownloadResumesWithoutPartialFiles(t *testing.T) {
	bin := buildAgent(t)
	srv := s3test.Start(t)
	proxy := s3test.NewCountingProxy(t, srv.Endpoint)
	srv.CreateBucket(t, "models")
	files := map[string][]byte{}
	for i := range 4 {
		files[fmt.Sprintf("w/shard-%d.bin", i)] = s3test.RandomBytes(uint64(i), 16<<20)
	}
	files["config.json"] = []byte(`{"layers":2}`)
	var total int64
	for k, b := range files {
		srv.Put(t, "models", "llm/"+k, b)
		total += int64(len(b))
	}
	n := newNode(t, bin, proxy.URL(), srv)
	// Two 8 MiB ranged GETs at a time, slowed down, so the kill lands mid-download
	// with whole leaves on disk and at most two partial ones.
	proxy.SetThrottle(24 << 20)
	n.start("--concurrency", "2", "--part-size", "8MiB")
	ref := "s3://models/llm?source=test"
	if out, err := n.run("prefetch", ref); err != nil {
		t.Fatalf("prefetch: %v\n%s", err, out)
	}
	c := agentapi.NewClient(n.socket)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Jobs) == 1 && st.Jobs[0].DoneBytes >= total/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("download did not progress: %+v", st.Jobs)
		}
	}
	n.kill9()
	firstRun := proxy.BytesSent()
	if firstRun >= total {
		t.Fatalf("the kill came too late: %d of %d bytes already sent", firstRun, total)
	}
	assertNoPartialFiles(t, filepath.Join(n.dir, "cache", "models"), files)

	proxy.SetThrottle(0)
	n.start("--concurrency", "2", "--part-size", "8MiB")
	out, err := n.run("prefetch", ref, "--wait")
	if err != nil {
		t.Fatalf("prefetch after restart: %v\n%s\nagent log:\n%s", err, out, n.log)
	}
	st, err := c.Status(context.Background())
	if err != nil || len(st.Models) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	for k, want := range files {
		got, err := os.ReadFile(filepath.Join(st.Models[0].Path, k))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs after resume (%v)", k, err)
		}
	}
	secondRun := proxy.BytesSent() - firstRun
	// Resumed: the second run fetched less than the model, and in all the
	// server sent at most the model plus the two leaves in flight at the kill.
	if secondRun >= total || firstRun+secondRun > total+2*(8<<20) {
		t.Fatalf("bytes sent: first run %d, second %d, model %d", firstRun, secondRun, total)
	}
	t.Logf("model %d bytes; sent %d before the kill, %d after", total, firstRun, secondRun)
}

// assertNoPartialFiles checks that every file visible under models/ is
// complete and correct: trees appear whole or not at all.
func assertNoPartialFiles(t *testing.T, models string, want map[string][]byte) {
	t.Helper()
	filepath.WalkDir(models, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(models, p)
		parts := strings.SplitN(rel, string(filepath.Separator), 3)
		if len(parts) < 3 {
			t.Errorf("stray file %s", rel)
			return nil
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want[filepath.ToSlash(parts[2])]) {
			t.Errorf("partial or wrong file visible: %s (%d bytes)", rel, len(got))
		}
		return nil
	})
}

func TestCLIErrorsAndStatus(t *testing.T) {
	bin := buildAgent(t)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "tiny/a.txt", []byte("hello"))
	n := newNode(t, bin, srv.Endpoint, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	// A partial download left two days ago by an earlier agent, which nobody
	// resumed: dropped at start (--partial-max-age 24h).
	stale := filepath.Join(n.dir, "cache", "ingest", "0123456789abcdef")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, "data"), make([]byte, 1<<20), 0o600)
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(filepath.Join(stale, "data"), old, old)
	os.Chtimes(stale, old, old)
	n.start("--metrics-addr", metricsAddr)

	for _, c := range []struct {
		args []string
		frag string
	}{
		{[]string{"prefetch", "s3:/bad"}, "want s3://"},
		{[]string{"prefetch", "s3://models/tiny?source=unknown", "--wait"}, "unknown"},
		{[]string{"prefetch", "s3://nobucket/tiny?source=test", "--wait"}, "nobucket"},
		{[]string{"status", "-o", "yaml"}, "table or json"},
		{[]string{"evict", "s3://models/never?source=test"}, "not found"},
	} {
		out, err := n.run(c.args...)
		if err == nil || !strings.Contains(out, c.frag) || strings.Contains(out, "panic") {
			t.Errorf("%v: err=%v out=%q; want failure mentioning %q", c.args, err, out, c.frag)
		}
	}
	// No agent: a clear error, not a hang.
	raw, err := exec.Command(bin, "status", "--socket", filepath.Join(t.TempDir(), "none.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(raw), "not answering") {
		t.Errorf("status without agent: %v %s", err, raw)
	}

	out, err := n.run("prefetch", "s3://models/tiny?source=test", "--wait")
	if err != nil || !strings.Contains(out, "ready") {
		t.Fatalf("prefetch: %v %s", err, out)
	}
	out, err = n.run("status")
	if err != nil || !strings.Contains(out, "s3://models/tiny?source=test") || !strings.Contains(out, "Dedup:") {
		t.Fatalf("status table: %v\n%s", err, out)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) || !strings.Contains(out, "Partial:   0 downloads") {
		t.Errorf("the stale partial download is still there (%v):\n%s", err, out)
	}
	out, err = n.run("status", "-o", "json")
	var st agentapi.StatusReport
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Models) != 1 || st.UsedBytes != 5 {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	metrics := httpGet(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`modelcache_fetched_bytes_total{source="s3"} 5`, `modelcache_ensure_total{result="miss",source="s3"} 1`,
		"modelcache_cache_used_bytes 5", "modelcache_cache_capacity_bytes 1.073741824e+09", `modelcache_errors_total{class="not_found",source="s3"} 1`,
		`modelcache_fetch_duration_seconds_count{result="ok",source="s3"} 1`, "modelcache_downloads_in_flight 0",
		"modelcache_partial_downloads_dropped_total 1"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if got := httpGet(t, "http://"+metricsAddr+"/healthz"); got != "ok\n" {
		t.Errorf("healthz: %q", got)
	}
	if out, err := n.run("verify"); err != nil || !strings.Contains(out, "verified 1 blobs") {
		t.Fatalf("verify: %v %s", err, out)
	}
	if out, err := n.run("evict", "s3://models/tiny?source=test"); err != nil || !strings.Contains(out, "evicted") {
		t.Fatalf("evict: %v %s", err, out)
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	if err := n.cmd.Wait(); err != nil {
		t.Errorf("agent did not stop cleanly on SIGTERM: %v\n%s", err, n.log)
	}
	if strings.Contains(n.log.String(), srv.SecretKey) {
		t.Fatal("the agent logged a secret")
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// An optional Secret that does not exist leaves kubelet's mount empty: the
// agent starts without named sources. A sources file that exists but is bad
// still stops it.
func TestServeSourcesFileMissingOrBad(t *testing.T) {
	bin := buildAgent(t)
	srv := s3test.Start(t)
	n := newNode(t, bin, srv.Endpoint, srv)
	n.sources = filepath.Join(n.dir, "secret", "sources.yaml")
	n.start()
	out, err := n.run("prefetch", "s3://models/tiny?source=test", "--wait")
	if err == nil || !strings.Contains(out, "none are configured") {
		t.Errorf("prefetch of a named source without a sources file: %v %q", err, out)
	}
	if !strings.Contains(n.log.String(), "sources file does not exist") {
		t.Errorf("no warning about the missing sources file:\n%s", n.log)
	}

	bad := filepath.Join(t.TempDir(), "sources.yaml")
	os.WriteFile(bad, []byte("sources:\n  test:\n    endpiont: http://x\n"), 0o600)
	raw, err := exec.Command(bin, "serve", "--socket", filepath.Join(t.TempDir(), "a.sock"), "--cache-dir", t.TempDir(),
		"--metrics-addr", "", "--sources-file", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(raw), "endpiont") {
		t.Errorf("serve with a misspelt sources file: %v %s", err, raw)
	}
}
