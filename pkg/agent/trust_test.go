package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// trustEnv is one agent between two tenants: the victim's bucket behind a
// source restricted to namespace team-a, and a server the attacker runs,
// which the operator even allows refs to name (the hardest case: an
// endpoint nobody allowed is refused before any request). Both servers are
// s3test.Hostile, so the attacker's can lie.
type trustEnv struct {
	victim, attacker *s3test.Hostile
	store            *cache.Store
	agent            *agent.Agent
}

func newTrustEnv(t *testing.T, capacity int64, opts ...fetch.Option) *trustEnv {
	t.Helper()
	e := &trustEnv{victim: s3test.StartHostile(t), attacker: s3test.StartHostile(t)}
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]fetch.Source{"victim": {Endpoint: e.victim.Endpoint, PathStyle: true,
		AccessKeyID: "VICTIMSOURCE", SecretAccessKey: "victim-source-secret", Namespaces: []string{"team-a"}}}
	opts = append([]fetch.Option{fetch.WithPartSize(8 << 20), fetch.WithAllowedEndpoints([]string{e.attacker.Endpoint})}, opts...)
	f, err := fetch.New(sources, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.store, e.agent = store, agent.New(store, f, nil, nil)
	t.Cleanup(func() { e.agent.Close(); store.Close() })
	return e
}

func (e *trustEnv) ensure(t *testing.T, ref string, acc *agentapi.Access) (agentapi.Progress, error) {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return e.agent.Ensure(context.Background(), r, agentapi.EnsureOptions{Wait: time.Minute, Access: acc})
}

func readTree(t *testing.T, p agentapi.Progress, file string) []byte {
	t.Helper()
	if p.State != agentapi.StateReady {
		t.Fatalf("%s: %s %s", p.Ref, p.State, p.Error)
	}
	b, err := os.ReadFile(filepath.Join(p.Path, file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gets counts the GETs a server answered for key.
func gets(h *s3test.Hostile, key string) int {
	n := 0
	for _, r := range h.Seen() {
		if r.Method == "GET" && r.Key == key {
			n++
		}
	}
	return n
}

// Issue 12, points 1 and 2: a server that lists a file with the ETag and
// size of the victim's neither poisons the victim's model (attacker first)
// nor gets the victim's bytes without a download (victim first).
func TestForeignETagNeitherPoisonsNorLeaks(t *testing.T) {
	victimBytes := s3test.RandomBytes(1, 9<<20)
	evil := bytes.Repeat([]byte("evil"), len(victimBytes)/4)
	for _, attackerFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("attackerFirst=", attackerFirst), func(t *testing.T) {
			e := newTrustEnv(t, 1<<30)
			e.victim.Put("weights", "llama/model.safetensors", victimBytes)
			etag := ""
			for _, r := range listETags(t, e.victim) {
				etag = r
			}
			e.attacker.Lie("mine", "llama/model.safetensors", s3test.Listing{ETag: etag, Size: int64(len(victimBytes)), Body: evil})
			victimRef := "s3://weights/llama?source=victim"
			attackerRef := "s3://mine/llama?endpoint=" + e.attacker.Endpoint
			teamA := &agentapi.Access{Namespace: "team-a"}

			first, second := victimRef, attackerRef
			if attackerFirst {
				first, second = attackerRef, victimRef
			}
			var got = map[string]agentapi.Progress{}
			for _, ref := range []string{first, second} {
				var acc *agentapi.Access
				if ref == victimRef {
					acc = teamA
				}
				p, err := e.ensure(t, ref, acc)
				if err != nil {
					t.Fatal(err)
				}
				got[ref] = p
			}
			if b := readTree(t, got[victimRef], "model.safetensors"); !bytes.Equal(b, victimBytes) {
				t.Fatal("the victim's model holds other bytes than the victim's bucket")
			}
			if b := readTree(t, got[attackerRef], "model.safetensors"); !bytes.Equal(b, evil) {
				t.Fatal("the attacker's model holds other bytes than the attacker's server served")
			}
			if gets(e.victim, "llama/model.safetensors") == 0 || gets(e.attacker, "llama/model.safetensors") == 0 {
				t.Fatal("a model was served from the other tenant's bytes without a download")
			}
			// A stranger refused the victim's source gets nothing.
			_, err := e.ensure(t, victimRef, &agentapi.Access{Namespace: "team-b"})
			if !errors.Is(err, fetch.ErrAccessDenied) {
				t.Fatalf("team-b on the victim's source: %v", err)
			}
		})
	}
}

// listETags lists the victim's bucket with the SDK's view of ETags: what an
// attacker would copy from a listing it saw (or guess: an MD5).
func listETags(t *testing.T, h *s3test.Hostile) []string {
	t.Helper()
	f, err := fetch.New(nil, fetch.WithAllowedEndpoints([]string{h.Endpoint}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.List(context.Background(), model.Ref{Bucket: "weights", Prefix: "llama", Endpoint: h.Endpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var etags []string
	for _, fl := range m.Files {
		etags = append(etags, fl.ETag)
	}
	return etags
}

// Issue 12, point 4: a volume's keys are checked against every object of
// the model, on a hit too. Keys denied on one file get nothing.
func TestAccessCheckedOnEveryFile(t *testing.T) {
	e := newTrustEnv(t, 1<<30)
	e.attacker.Put("shared", "m/config.json", []byte(`{"a":1}`))
	e.attacker.Put("shared", "m/tokenizer.json", []byte(`{}`))
	w := s3test.RandomBytes(3, 1<<20)
	e.attacker.Lie("shared", "m/weights.bin", s3test.Listing{ETag: "w1", Size: int64(len(w)), Body: w, DenyTo: []string{"PARTIAL"}})
	ref := "s3://shared/m?endpoint=" + e.attacker.Endpoint
	owner := &agentapi.Access{Namespace: "x", Credentials: &agentapi.Credentials{AccessKeyID: "OWNER", SecretAccessKey: "s"}}
	partial := &agentapi.Access{Namespace: "x", Credentials: &agentapi.Credentials{AccessKeyID: "PARTIAL", SecretAccessKey: "s"}}
	if _, err := e.ensure(t, ref, partial); !errors.Is(err, fetch.ErrAccessDenied) || !strings.Contains(err.Error(), "weights.bin") {
		t.Fatalf("cold, keys denied on weights.bin: %v", err)
	}
	p, err := e.ensure(t, ref, owner)
	if err != nil || !bytes.Equal(readTree(t, p, "weights.bin"), w) {
		t.Fatalf("owner: %v", err)
	}
	if _, err := e.ensure(t, ref, partial); !errors.Is(err, fetch.ErrAccessDenied) {
		t.Fatalf("hit, keys denied on weights.bin: %v", err)
	}
}

// Issue 12, point 6: absurd sizes in a listing are a clear error, not a
// crash, and nothing is reserved or allocated for them.
func TestAbsurdListedSizesAreErrors(t *testing.T) {
	e := newTrustEnv(t, 1<<30)
	e.attacker.Lie("bkt", "m/huge", s3test.Listing{ETag: "h", Size: 1<<63 - 1})
	e.attacker.Put("bkt", "m/tiny", []byte("x"))
	e.attacker.Lie("bkt", "big/a", s3test.Listing{ETag: "a", Size: 4 << 40})
	e.attacker.Lie("bkt", "big/b", s3test.Listing{ETag: "b", Size: 4 << 40})
	e.attacker.Lie("bkt", "neg/a", s3test.Listing{ETag: "n", Size: -7})
	for _, c := range []struct{ prefix, class string }{{"m", "invalid"}, {"neg", "invalid"}, {"big", "no_space"}} {
		p, err := e.ensure(t, "s3://bkt/"+c.prefix+"?endpoint="+e.attacker.Endpoint, nil)
		if err == nil || p.ErrorClass != c.class {
			t.Fatalf("%s: %+v %v, want class %s", c.prefix, p, err, c.class)
		}
		t.Logf("%s: %v", c.prefix, err)
	}
	if st := e.agent.Status(); st.ReservedBytes != 0 || st.Partials.Bytes != 0 {
		t.Fatalf("absurd listings left %d bytes reserved, %d partial", st.ReservedBytes, st.Partials.Bytes)
	}
}

// Issue 12, point 7: a listing that never ends stops at the page limit with
// an error that names the flag, having held a bounded number of keys.
func TestEndlessListingStops(t *testing.T) {
	e := newTrustEnv(t, 1<<30, fetch.WithListLimits(0, 40, 0))
	e.attacker.EndlessPages("bkt")
	e.attacker.PageSize(500)
	start := time.Now()
	p, err := e.ensure(t, "s3://bkt/m?endpoint="+e.attacker.Endpoint, nil)
	if !errors.Is(err, fetch.ErrLimit) || !strings.Contains(err.Error(), "--max-list-pages") || p.ErrorClass != "invalid" {
		t.Fatalf("endless listing: %+v %v", p, err)
	}
	if n := e.attacker.Pages(); n != 40 {
		t.Fatalf("%d pages read, want the limit of 40", n)
	}
	t.Logf("stopped after %s: %v", time.Since(start).Round(time.Millisecond), err)
	// Too many files and too long are bounded the same way.
	e = newTrustEnv(t, 1<<30, fetch.WithListLimits(1000, 0, 0))
	e.attacker.EndlessPages("bkt")
	if _, err := e.ensure(t, "s3://bkt/m?endpoint="+e.attacker.Endpoint, nil); !errors.Is(err, fetch.ErrLimit) || !strings.Contains(err.Error(), "--max-files") {
		t.Fatalf("files limit: %v", err)
	}
	e = newTrustEnv(t, 1<<30, fetch.WithListLimits(0, 0, 300*time.Millisecond))
	e.attacker.EndlessPages("bkt")
	e.attacker.PageSize(1)
	if _, err := e.ensure(t, "s3://bkt/m?endpoint="+e.attacker.Endpoint, nil); !errors.Is(err, fetch.ErrLimit) || !strings.Contains(err.Error(), "--list-timeout") {
		t.Fatalf("time limit: %v", err)
	}
}

// Issue 12, point 9: finished downloads leave the job map, so ensures of
// ever new refs do not grow it without bound.
func TestJobMapBounded(t *testing.T) {
	e := newTrustEnv(t, 1<<30)
	for i := range 300 {
		r, _ := model.ParseRef(fmt.Sprintf("s3://nobucket/m%d?endpoint=%s", i, e.attacker.Endpoint))
		if _, err := e.agent.Ensure(context.Background(), r, agentapi.EnsureOptions{Wait: time.Minute}); !errors.Is(err, fetch.ErrNotFound) {
			t.Fatalf("ensure %d: %v", i, err)
		}
	}
	if n := len(e.agent.Jobs()); n > 257 {
		t.Fatalf("%d jobs kept after 300 failed ensures", n)
	}
}

// blockingFetcher lists nothing until released: a download that holds its
// slot for as long as the test wants.
type blockingFetcher struct{ release chan struct{} }

func (b blockingFetcher) List(ctx context.Context, ref model.Ref, _ *model.Credentials) (*model.Manifest, error) {
	<-b.release
	return nil, fmt.Errorf("%w: released", fetch.ErrNotFound)
}

func (b blockingFetcher) Fetch(context.Context, model.Ref, *model.Credentials, *model.Manifest, fetch.Store, fetch.Progress) (*model.Manifest, fetch.Stats, error) {
	return nil, fetch.Stats{}, errors.New("not reached")
}

func (blockingFetcher) AllowedIn(model.Ref, string) error { return nil }

func (blockingFetcher) CheckAccess(context.Context, model.Ref, *model.Credentials) error { return nil }

// Issue 12, point 9: one bound on the downloads that run at once, whoever
// asks; the others wait, reported as queued.
func TestDownloadsBoundedGlobally(t *testing.T) {
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	f := blockingFetcher{release: make(chan struct{})}
	a := agent.New(store, f, nil, nil, agent.WithMaxDownloads(2))
	t.Cleanup(func() { a.Close(); store.Close() })
	for i := range 5 {
		r, _ := model.ParseRef(fmt.Sprintf("s3://bkt/m%d", i))
		if _, err := a.Ensure(context.Background(), r, agentapi.EnsureOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	states := func() map[agentapi.State]int {
		n := map[agentapi.State]int{}
		for _, j := range a.Jobs() {
			n[j.State]++
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n := states(); n[agentapi.StateListing] == 2 && n[agentapi.StateQueued] == 3 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("states %v, want 2 listing and 3 queued", n)
		}
	}
	close(f.release)
	for deadline := time.Now().Add(5 * time.Second); states()[agentapi.StateFailed] != 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("states %v after release", states())
		}
	}
}

// Issue 12, point 10: one namespace's prefetches cannot take the cache from
// another's pods. Models only prefetches pin give way to a volume's
// download (LRU first); a prefetch never evicts what a volume pins, nor
// another prefetch's pin (a4 below finds only those and fails).
func TestPrefetchPinsGiveWayToVolumes(t *testing.T) {
	h := s3test.StartHostile(t)
	for i, m := range []string{"a1", "a2", "a3", "a4", "b"} {
		h.Put("models", m+"/w.bin", s3test.RandomBytes(uint64(i+100), 20<<20))
	}
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 64 << 20,
		Yields: func(holder string) bool { return strings.HasPrefix(holder, "workload:") }})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetch.New(nil, fetch.WithPartSize(8<<20), fetch.WithAllowedEndpoints([]string{h.Endpoint}))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, f, nil, nil)
	t.Cleanup(func() { a.Close(); store.Close() })
	ref := func(m string) model.Ref {
		r, _ := model.ParseRef("s3://models/" + m + "?endpoint=" + h.Endpoint)
		return r
	}
	prefetch := func(m string) error {
		if _, err := a.Ensure(context.Background(), ref(m), agentapi.EnsureOptions{Wait: time.Minute}); err != nil {
			return err
		}
		_, err := a.Pin(ref(m), "workload:deployment/team-a/"+m)
		return err
	}
	// Team a pre-warms two models: 40 of 64 MiB, pinned.
	for _, m := range []string{"a1", "a2"} {
		if err := prefetch(m); err != nil {
			t.Fatal(err)
		}
	}
	// A pod of team b needs a model: team a's least recently used prefetch
	// gives way.
	p, err := a.Ensure(context.Background(), ref("b"), agentapi.EnsureOptions{Wait: time.Minute, Access: &agentapi.Access{Namespace: "team-b"}})
	if err != nil {
		t.Fatalf("team b's volume beside team a's prefetches: %v", err)
	}
	if _, err := a.Pin(ref("b"), "csi:vol-b"); err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, m := range store.Status().Models {
		held[m.Ref] = true
	}
	if !held[ref("b").String()] || held[ref("a1").String()] || !held[ref("a2").String()] {
		t.Fatalf("after team b's volume: held %v, want b and a2 (a1, least recently used, gave way)", held)
	}
	t.Logf("team b's model ready in %s", p.Path)
	// Team a may use the room that is left, but cannot take the pod's:
	// past it, its prefetch fails with no space and team b's model stays.
	if err := prefetch("a3"); err != nil {
		t.Fatalf("team a's prefetch into free room: %v", err)
	}
	if err := prefetch("a4"); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("team a's prefetch past the capacity: %v, want no space", err)
	}
	if _, err := store.Lookup(ref("b")); err != nil {
		t.Fatalf("team b's model after team a's prefetch: %v", err)
	}
}

// Issue 12: where the source publishes a SHA-256 (an object uploaded with
// x-amz-checksum-sha256), the download is checked against it: bytes that
// do not match fail the download and nothing is stored; matching ones are
// stored under that digest. A multipart upload's composite checksum (the
// SHA-256 of its parts' SHA-256s) is checked the same way, with the parts'
// sizes from GetObjectAttributes.
func TestSourceChecksumVerified(t *testing.T) {
	e := newTrustEnv(t, 1<<30)
	good := s3test.RandomBytes(21, 9<<20+5)
	sum := sha256.Sum256(good)
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	e.attacker.Lie("bkt", "ok/w.bin", s3test.Listing{ETag: "g", Size: int64(len(good)), Body: good, ChecksumSHA256: b64})
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	e.attacker.Lie("bkt", "bad/w.bin", s3test.Listing{ETag: "b", Size: int64(len(bad)), Body: bad, ChecksumSHA256: b64})
	// A multipart upload of good in two parts: its composite checksum.
	parts := []int64{5 << 20, int64(len(good)) - 5<<20}
	p1, p2 := sha256.Sum256(good[:parts[0]]), sha256.Sum256(good[parts[0]:])
	comp := sha256.Sum256(append(p1[:], p2[:]...))
	c64 := base64.StdEncoding.EncodeToString(comp[:]) + "-2"
	e.attacker.Lie("bkt", "multi/w.bin", s3test.Listing{ETag: "m-2", Size: int64(len(good)), Body: good,
		ChecksumSHA256: c64, ChecksumType: "COMPOSITE", PartSizes: parts})
	e.attacker.Lie("bkt", "multibad/w.bin", s3test.Listing{ETag: "n-2", Size: int64(len(bad)), Body: bad,
		ChecksumSHA256: c64, ChecksumType: "COMPOSITE", PartSizes: parts})
	e.attacker.Lie("bkt", "multiparts/w.bin", s3test.Listing{ETag: "o-2", Size: int64(len(good)), Body: good,
		ChecksumSHA256: c64, ChecksumType: "COMPOSITE", PartSizes: []int64{5 << 20, 1}})

	p, err := e.ensure(t, "s3://bkt/ok?endpoint="+e.attacker.Endpoint, nil)
	if err != nil || !bytes.Equal(readTree(t, p, "w.bin"), good) {
		t.Fatalf("published checksum that matches: %v", err)
	}
	_, err = e.ensure(t, "s3://bkt/bad?endpoint="+e.attacker.Endpoint, nil)
	if !errors.Is(err, fetch.ErrChanged) || !strings.Contains(err.Error(), "SHA-256 expected for the file") {
		t.Fatalf("published checksum that does not match: %v", err)
	}
	t.Log(err)
	if st := e.agent.Status(); len(st.Models) != 1 || st.Partials.Count != 0 {
		t.Fatalf("after the mismatch: %d models, %d partial downloads", len(st.Models), st.Partials.Count)
	}
	p, err = e.ensure(t, "s3://bkt/multi?endpoint="+e.attacker.Endpoint, nil)
	if err != nil || !bytes.Equal(readTree(t, p, "w.bin"), good) {
		t.Fatalf("composite checksum that matches: %v", err)
	}
	for _, prefix := range []string{"multibad", "multiparts"} {
		if _, err := e.ensure(t, "s3://bkt/"+prefix+"?endpoint="+e.attacker.Endpoint, nil); !errors.Is(err, fetch.ErrChanged) {
			t.Fatalf("%s: %v, want changed", prefix, err)
		} else {
			t.Log(err)
		}
	}
}
