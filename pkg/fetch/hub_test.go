package fetch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/hubtest"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// hubEnv is the Hub fixture, a store and a fetcher with the Hub as source
// "hub" (with token, when given).
func hubEnv(t *testing.T, token string) (*hubtest.Hub, *cache.Store, *fetch.Fetcher) {
	t.Helper()
	hub := hubtest.Start(t)
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f, err := fetch.New(map[string]fetch.Source{"hub": {Type: fetch.SourceHub, Endpoint: hub.URL, Token: token}},
		fetch.WithPartSize(model.LeafSize), fetch.WithAllowedEndpoints([]string{hub.URL}))
	if err != nil {
		t.Fatal(err)
	}
	return hub, store, f
}

func hubFiles() map[string]hubtest.File {
	big := make([]byte, 2*model.LeafSize+12345) // three parts, through the CDN
	for i := range big {
		big[i] = byte(i * 31)
	}
	return map[string]hubtest.File{
		"config.json":                  {Data: []byte(`{"architectures":["LlamaForCausalLM"]}`)},
		"model.safetensors":            {Data: big, LFS: true},
		"pytorch_model.bin":            {Data: big[:1000], LFS: true},
		"original/consolidated.00.pth": {Data: big[:5000], LFS: true},
		"empty.txt":                    {},
	}
}

func bytesOf(files map[string]hubtest.File, keep func(string) bool) map[string][]byte {
	out := map[string][]byte{}
	for p, f := range files {
		if keep == nil || keep(p) {
			out[p] = f.Data
		}
	}
	return out
}

func TestFetchHubModel(t *testing.T) {
	hub, store, f := hubEnv(t, "hf_agent")
	files := hubFiles()
	commit := hub.Commit("org/llm", "main", files)
	hub.SetAccess("org/llm", hubtest.Gated, "hf_agent")

	ref := mustRef(t, "hf://org/llm?source=hub")
	m, st := listAndFetch(t, f, ref, store)
	if m.SourceRevision != commit {
		t.Errorf("manifest commit %q, want %s", m.SourceRevision, commit)
	}
	checkTree(t, store, m, bytesOf(files, nil))
	if st.BytesFetched != int64(len(files["model.safetensors"].Data)+1000+5000+len(files["config.json"].Data)) {
		t.Errorf("fetched %d bytes", st.BytesFetched)
	}
	for _, q := range hub.Requests() {
		if q.Server == "cdn" && q.Authorization != "" {
			t.Errorf("the token reached the CDN: %s %s", q.Method, q.Path)
		}
	}

	// Only the weights and configs, as allow_patterns would select them.
	sel := mustRef(t, "hf://org/llm?source=hub&include=*.safetensors,*.json&exclude=original/")
	m2, st2 := listAndFetch(t, f, sel, store)
	checkTree(t, store, m2, bytesOf(files, func(p string) bool { return p == "config.json" || p == "model.safetensors" }))
	if st2.BytesFetched != 0 {
		t.Errorf("the selection fetched %d bytes; every file was held", st2.BytesFetched)
	}
	if _, err := f.List(context.Background(), mustRef(t, "hf://org/llm?source=hub&include=*.gguf"), nil); !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("a pattern that selects nothing: %v, want ErrNotFound", err)
	}
}

// The Hub publishes an LFS file's SHA-256; bytes that do not have it are a
// failed download and nothing is stored.
func TestFetchHubSHA256Mismatch(t *testing.T) {
	hub, store, f := hubEnv(t, "")
	files := hubFiles()
	hub.Commit("org/llm", "main", files)
	bad := append([]byte(nil), files["pytorch_model.bin"].Data...)
	bad[500] ^= 1
	hub.Corrupt("org/llm", "pytorch_model.bin", bad)

	ref := mustRef(t, "hf://org/llm?source=hub")
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Fetch(context.Background(), ref, nil, m, store, nil)
	if !errors.Is(err, fetch.ErrChanged) || !strings.Contains(err.Error(), "SHA-256") || !strings.Contains(err.Error(), "pytorch_model.bin") {
		t.Fatalf("corrupt LFS bytes: %v; want ErrChanged naming the file and SHA-256", err)
	}
	blobs := filepath.Join(store.Root(), "blobs")
	filepath.Walk(blobs, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() == int64(len(bad)) {
			t.Errorf("a blob of the corrupt file's size is stored: %s", p)
		}
		return nil
	})
}

// A small git file (a config) has only its git blob id; bytes that do not
// have it fail the download too.
func TestFetchHubGitBlobMismatch(t *testing.T) {
	hub, store, f := hubEnv(t, "")
	files := hubFiles()
	hub.Commit("org/llm", "main", files)
	hub.Corrupt("org/llm", "config.json", []byte(`{"architectures":["EvilaForCausalLM"]}`)) // same length
	ref := mustRef(t, "hf://org/llm?source=hub&include=*.json")
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Fetch(context.Background(), ref, nil, m, store, nil)
	if !errors.Is(err, fetch.ErrChanged) || !strings.Contains(err.Error(), "git blob id") {
		t.Fatalf("corrupt git file: %v; want ErrChanged about its git blob id", err)
	}
}

// A hit checks the volume's own token: a Hub model cached by one tenant
// is not served to a volume whose token may not read it.
func TestHubAccessWithVolumeToken(t *testing.T) {
	hub, store, f := hubEnv(t, "hf_agent")
	hub.Commit("org/llm", "main", hubFiles())
	hub.SetAccess("org/llm", hubtest.Gated, "hf_agent", "hf_alice")
	ref := mustRef(t, "hf://org/llm?source=hub")
	listAndFetch(t, f, ref, store)

	ctx := context.Background()
	if err := f.CheckAccess(ctx, ref, &model.Credentials{Token: "hf_alice"}); err != nil {
		t.Errorf("alice's token: %v", err)
	}
	err := f.CheckAccess(ctx, ref, &model.Credentials{Token: "hf_mallory"})
	if !errors.Is(err, fetch.ErrAccessDenied) || strings.Contains(err.Error(), "hf_mallory") {
		t.Errorf("mallory's token: %v; want ErrAccessDenied without the token in it", err)
	}
	if err := f.CheckAccess(ctx, ref, &model.Credentials{AccessKeyID: "AKIA", SecretAccessKey: "s"}); !errors.Is(err, model.ErrInvalidRef) {
		t.Errorf("S3 keys for a Hub model: %v", err)
	}
}

// Endpoints and sources stay the operator's: a ref may not take a Hub
// source's token to another endpoint, nor name an endpoint not allowed.
func TestHubRefEndpointRules(t *testing.T) {
	hub, _, f := hubEnv(t, "hf_agent")
	hub.Commit("org/llm", "main", hubFiles())
	ctx := context.Background()
	for s, class := range map[string]error{
		"hf://org/llm?source=hub&endpoint=http://127.0.0.1:1": model.ErrInvalidRef,
		"hf://org/llm?endpoint=http://127.0.0.1:1":            fetch.ErrAccessDenied,
		"hf://org/llm?source=nope":                            fetch.ErrUnknownSource,
	} {
		if _, err := f.List(ctx, mustRef(t, s), nil); !errors.Is(err, class) {
			t.Errorf("%s: %v, want %v", s, err, class)
		}
	}
	// An allowed endpoint without a source: anonymous, so a public repo only.
	if _, err := f.List(ctx, mustRef(t, "hf://org/llm?endpoint="+hub.URL), nil); err != nil {
		t.Errorf("allowed endpoint: %v", err)
	}
	for _, q := range hub.Requests() {
		if q.Authorization != "" && !strings.Contains(q.Authorization, "hf_agent") {
			t.Errorf("unexpected Authorization %q", q.Authorization)
		}
	}
}

// A source kept for some namespaces says so about an hf:// ref in its own
// words, not as an S3 path.
func TestHubSourceNamespaces(t *testing.T) {
	f, err := fetch.New(map[string]fetch.Source{"hub": {Type: fetch.SourceHub, Namespaces: []string{"ml"}}})
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "hf://org/llm?source=hub")
	if err := f.AllowedIn(ref, "ml"); err != nil {
		t.Errorf("namespace ml: %v", err)
	}
	err = f.AllowedIn(ref, "other")
	if !errors.Is(err, fetch.ErrAccessDenied) || !strings.Contains(err.Error(), "hf://org/llm") || strings.Contains(err.Error(), "s3://") {
		t.Errorf("namespace other: %v", err)
	}
}

// include/exclude select an S3 model's files too.
func TestS3Selection(t *testing.T) {
	e := newEnv(t)
	e.putAll(t, "models", map[string][]byte{"sel/w.safetensors": []byte("w"), "sel/pytorch_model.bin": []byte("b"), "sel/config.json": []byte("{}")})
	m, err := e.fetcher(t).List(context.Background(), mustRef(t, "s3://models/sel?source=test&exclude=*.bin"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 || m.Files[0].Path != "config.json" || m.Files[1].Path != "w.safetensors" {
		t.Errorf("files %+v, want config.json and w.safetensors", m.Files)
	}
}
