package main_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agentapi"
)

// 50 kill -9s of the real agent binary while it fetches a multi-file model,
// each at a random point of the download, restarting it every time: no
// partial or corrupt file is ever visible under models/, the model then
// completes, and the server sent less than twice the model in all (resume
// keeps every whole leaf; a kill costs at most the leaf in flight).
func TestCrashLoop(t *testing.T) {
	bin := buildAgent(t)
	srv := s3test.Start(t)
	proxy := s3test.NewCountingProxy(t, srv.Endpoint)
	srv.CreateBucket(t, "models")
	files := map[string][]byte{"config.json": []byte(`{"layers": 40}`), "tokenizer.json": s3test.RandomBytes(99, 3<<20)}
	for i := range 10 {
		files[fmt.Sprintf("model-%05d.safetensors", i)] = s3test.RandomBytes(uint64(100+i), 32<<20)
	}
	var total int64
	for k, b := range files {
		srv.Put(t, "models", "crash/"+k, b)
		total += int64(len(b))
	}
	n := newNode(t, bin, proxy.URL(), srv)
	models := filepath.Join(n.dir, "cache", "models")
	ref := "s3://models/crash?source=test"
	c := agentapi.NewClient(n.socket)
	// One 8 MiB ranged GET at a time, paced, so each kill lands inside a
	// known number of bytes of this run.
	proxy.SetThrottle(64 << 20)
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))

	kills, done := 0, false
	for kills < 50 && !done {
		n.start("--concurrency", "1", "--part-size", "8MiB")
		if _, err := c.Ensure(context.Background(), ref, agentapi.EnsureOptions{}, nil); err != nil {
			t.Fatalf("ensure after %d kills: %v\n%s", kills, err, n.log)
		}
		// Kill once this run has fetched a random 1-14 MiB (or it is done).
		at := int64(1<<20 + rng.IntN(13<<20))
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			st, err := c.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Models) > 0 {
				done = true
				break
			}
			if len(st.Jobs) == 1 && (st.Jobs[0].FetchedBytes >= at || st.Jobs[0].State == agentapi.StateFailed) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no progress after %d kills: %+v", kills, st.Jobs)
			}
		}
		n.kill9()
		if !done {
			kills++
		}
		assertNoPartialFiles(t, models, files)
		if t.Failed() {
			t.Fatalf("after kill %d", kills)
		}
	}
	beforeLast := proxy.BytesSent()

	proxy.SetThrottle(0)
	n.start("--concurrency", "1", "--part-size", "8MiB")
	if out, err := n.run("prefetch", ref, "--wait"); err != nil {
		t.Fatalf("prefetch after %d kills: %v\n%s\n%s", kills, err, out, n.log)
	}
	st, err := c.Status(context.Background())
	if err != nil || len(st.Models) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	for k, want := range files {
		if got, err := os.ReadFile(filepath.Join(st.Models[0].Path, k)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs after %d kills (%v)", k, kills, err)
		}
	}
	assertNoPartialFiles(t, models, files)
	sent := proxy.BytesSent()
	t.Logf("%d kills; model %d MiB; server sent %d MiB during the kills, %d MiB in all (%.2f× the model)",
		kills, total>>20, beforeLast>>20, sent>>20, float64(sent)/float64(total))
	if kills < 50 {
		t.Errorf("the model completed after only %d kills; the loop must kill 50 times during its download", kills)
	}
	if sent >= 2*total {
		t.Errorf("server sent %d bytes for a %d-byte model: resume lost too much", sent, total)
	}
}
