package fetch_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelcache/modelcache/internal/gcstest"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

const (
	agentSA = "agent@test.iam.gserviceaccount.com"
	aliceSA = "alice@test.iam.gserviceaccount.com"
	eveSA   = "eve@test.iam.gserviceaccount.com"
)

// gcsEnv is a fake-gcs-server with a bucket "models", a store, and a
// fetcher whose source "gcs" is the server (anonymous), or the guard in
// front of it with the agent's own key file when guarded.
type gcsEnv struct {
	srv   *gcstest.Server
	guard *gcstest.Guard
	store *cache.Store
	root  string
	f     *fetch.Fetcher
}

func newGCSEnv(t *testing.T, guarded bool, opts ...fetch.Option) *gcsEnv {
	t.Helper()
	e := &gcsEnv{srv: gcstest.Start(t), root: t.TempDir()}
	e.srv.CreateBucket(t, "models")
	store, err := cache.Open(e.root, cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e.store = store
	src := fetch.Source{Type: fetch.SourceGCS, Endpoint: e.srv.Endpoint, Anonymous: true}
	if guarded {
		e.guard = gcstest.NewGuard(t, e.srv.Endpoint)
		e.guard.Allow("models", agentSA)
		key := filepath.Join(t.TempDir(), "key.json")
		if err := os.WriteFile(key, gcstest.ServiceAccountKey(t, agentSA), 0o600); err != nil {
			t.Fatal(err)
		}
		src = fetch.Source{Type: fetch.SourceGCS, Endpoint: e.guard.URL, CredentialsFile: key}
	}
	opts = append([]fetch.Option{fetch.WithPartSize(model.LeafSize)}, opts...)
	if e.f, err = fetch.New(map[string]fetch.Source{"gcs": src}, opts...); err != nil {
		t.Fatal(err)
	}
	return e
}

func gcsFiles() map[string][]byte {
	big := make([]byte, 2*model.LeafSize+12345) // three parts
	for i := range big {
		big[i] = byte(i * 31)
	}
	return map[string][]byte{
		"config.json":                  []byte(`{"architectures":["LlamaForCausalLM"]}`),
		"model.safetensors":            big,
		"pytorch_model.bin":            big[:1000],
		"original/consolidated.00.pth": big[:5000],
		"empty.txt":                    {},
	}
}

func (e *gcsEnv) putAll(t *testing.T, prefix string, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		e.srv.Put(t, "models", prefix+"/"+p, b)
	}
}

func TestFetchGCSModel(t *testing.T) {
	e := newGCSEnv(t, false)
	files := gcsFiles()
	e.putAll(t, "llama", files)
	e.srv.Put(t, "models", "llama-2/other", []byte("not this model's"))

	ref := mustRef(t, "gs://models/llama?source=gcs")
	m, st := listAndFetch(t, e.f, ref, e.store)
	checkTree(t, e.store, m, files)
	if want := int64(len(files["model.safetensors"]) + 1000 + 5000 + len(files["config.json"])); st.BytesFetched != want {
		t.Errorf("fetched %d bytes, want %d", st.BytesFetched, want)
	}
	for _, f := range m.Files {
		if !strings.Contains(f.ETag, "/md5:") {
			t.Errorf("%s: version token %q, want GENERATION/md5:HEX", f.Path, f.ETag)
		}
	}

	// Only the weights and configs; every byte is held already.
	sel := mustRef(t, "gs://models/llama?source=gcs&include=*.safetensors,*.json&exclude=original/")
	m2, st2 := listAndFetch(t, e.f, sel, e.store)
	checkTree(t, e.store, m2, map[string][]byte{"config.json": files["config.json"], "model.safetensors": files["model.safetensors"]})
	if st2.BytesFetched != 0 {
		t.Errorf("the selection fetched %d bytes; every file was held", st2.BytesFetched)
	}
	ctx := context.Background()
	for s, class := range map[string]error{
		"gs://models/llama?source=gcs&include=*.gguf": fetch.ErrNotFound,
		"gs://models/nothing?source=gcs":              fetch.ErrNotFound,
		"gs://nosuchbucket/llama?source=gcs":          fetch.ErrNotFound,
	} {
		if _, err := e.f.List(ctx, mustRef(t, s), nil); !errors.Is(err, class) {
			t.Errorf("%s: %v, want %v", s, err, class)
		}
	}
}

// An object overwritten between the listing and the download fails the
// download as changed: its listed generation is gone, and no byte of the
// new one lands in the model.
func TestFetchGCSOverwritten(t *testing.T) {
	e := newGCSEnv(t, false)
	files := gcsFiles()
	e.putAll(t, "m", files)
	ref := mustRef(t, "gs://models/m?source=gcs")
	ctx := context.Background()
	listed, err := e.f.List(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(files["model.safetensors"])
	changed[len(changed)/2] ^= 0xff // same size, other bytes
	e.srv.Put(t, "models", "m/model.safetensors", changed)
	_, _, err = e.f.Fetch(ctx, ref, nil, listed, e.store, nil)
	if !errors.Is(err, fetch.ErrChanged) || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("fetch of an overwritten object: %v; want ErrChanged naming it", err)
	}
	// Listed again, it is the new content.
	files["model.safetensors"] = changed
	m, _ := listAndFetch(t, e.f, ref, e.store)
	checkTree(t, e.store, m, files)
}

// A hit checks the volume's own key: a model cached through the agent's
// identity is not served to a volume whose key may not read every file.
func TestGCSAccessWithVolumeKey(t *testing.T) {
	e := newGCSEnv(t, true)
	e.guard.Allow("models", aliceSA)
	e.putAll(t, "llama", gcsFiles())
	ref := mustRef(t, "gs://models/llama?source=gcs")
	listAndFetch(t, e.f, ref, e.store)

	ctx := context.Background()
	alice := string(gcstest.ServiceAccountKey(t, aliceSA))
	if err := e.f.CheckAccess(ctx, ref, &model.Credentials{ServiceAccountKey: alice}); err != nil {
		t.Errorf("alice's key: %v", err)
	}
	eve := string(gcstest.ServiceAccountKey(t, eveSA))
	err := e.f.CheckAccess(ctx, ref, &model.Credentials{ServiceAccountKey: eve})
	if !errors.Is(err, fetch.ErrAccessDenied) || strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("eve's key: %v; want ErrAccessDenied without the key in it", err)
	}
	for name, c := range map[string]model.Credentials{
		"S3 keys":       {AccessKeyID: "AKIA", SecretAccessKey: "s"},
		"Hub token":     {Token: "hf_x"},
		"key and token": {ServiceAccountKey: alice, Token: "hf_x"},
		"not a key":     {ServiceAccountKey: `{"type":"external_account","credential_source":{"url":"http://169.254.169.254/"}}`},
	} {
		if err := e.f.CheckAccess(ctx, ref, &c); !errors.Is(err, model.ErrInvalidRef) {
			t.Errorf("%s for a gs:// model: %v, want ErrInvalidRef", name, err)
		}
	}
	// A bucket only alice may read: the agent's key is refused, a download
	// with hers is not.
	e.srv.CreateBucket(t, "private")
	e.guard.Allow("private", aliceSA)
	e.srv.Put(t, "private", "m/w.bin", []byte("alice's weights"))
	priv := mustRef(t, "gs://private/m?source=gcs")
	if _, err := e.f.List(ctx, priv, nil); !errors.Is(err, fetch.ErrAccessDenied) {
		t.Errorf("the agent's key on alice's bucket: %v, want ErrAccessDenied", err)
	}
	aliceCreds := &model.Credentials{ServiceAccountKey: alice}
	m, err := e.f.List(ctx, priv, aliceCreds)
	if err != nil {
		t.Fatal(err)
	}
	full, _, err := e.f.Fetch(ctx, priv, aliceCreds, m, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, e.store, full, map[string][]byte{"w.bin": []byte("alice's weights")})

	// The agent's key went with its own requests only, the volumes' with
	// theirs; nothing went without one.
	for _, who := range e.guard.Seen() {
		if who != agentSA && who != aliceSA && who != eveSA {
			t.Errorf("a request as %q", who)
		}
	}
}

// Endpoints and sources stay the operator's: a ref may not take a source's
// credentials to another endpoint, nor name an endpoint not allowed; an
// allowed endpoint gets no credentials of the agent's.
func TestGCSRefRules(t *testing.T) {
	e := newGCSEnv(t, true, fetch.WithAllowedEndpoints(nil))
	e.putAll(t, "llama", map[string][]byte{"a": []byte("a")})
	ctx := context.Background()
	for s, class := range map[string]error{
		"gs://models/llama?source=gcs&endpoint=http://127.0.0.1:1": model.ErrInvalidRef,
		"gs://models/llama?endpoint=http://127.0.0.1:1":            fetch.ErrAccessDenied,
		"gs://models/llama?source=nope":                            fetch.ErrUnknownSource,
	} {
		if _, err := e.f.List(ctx, mustRef(t, s), nil); !errors.Is(err, class) {
			t.Errorf("%s: %v, want %v", s, err, class)
		}
	}
	if _, err := model.ParseRef("gs://models/llama?region=us-east1"); err == nil {
		t.Error("a gs:// ref with a region parsed")
	}

	f, err := fetch.New(map[string]fetch.Source{"s3": {}, "hub": {Type: fetch.SourceHub}}, fetch.WithAllowedEndpoints([]string{e.guard.URL}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"gs://models/llama?source=s3", "gs://models/llama?source=hub"} {
		if _, err := f.List(ctx, mustRef(t, s), nil); !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "type: gcs") {
			t.Errorf("%s: %v, want ErrInvalidRef asking for a gcs source", s, err)
		}
	}
	// An allowed endpoint without a source is anonymous (the guard says
	// 401) unless the volume brings a key.
	ref := mustRef(t, "gs://models/llama?endpoint="+e.guard.URL)
	before := len(e.guard.Seen())
	if _, err := f.List(ctx, ref, nil); !errors.Is(err, fetch.ErrAccessDenied) || !strings.Contains(err.Error(), "401") {
		t.Errorf("allowed endpoint, anonymous: %v; want a 401", err)
	}
	if seen := e.guard.Seen()[before:]; len(seen) != 1 || seen[0] != "" {
		t.Errorf("requests as %q, want one anonymous", seen)
	}
	key := string(gcstest.ServiceAccountKey(t, agentSA))
	if _, err := f.List(ctx, ref, &model.Credentials{ServiceAccountKey: key}); err != nil {
		t.Errorf("allowed endpoint with the volume's key: %v", err)
	}
}

func TestGCSSourcesFile(t *testing.T) {
	dir := t.TempDir()
	key := gcstest.ServiceAccountKey(t, agentSA)
	if err := os.WriteFile(filepath.Join(dir, "key.json"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(body string) string {
		p := filepath.Join(dir, "sources.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := fetch.LoadConfig(write("sources:\n  gcs:\n    type: gcs\n    credentialsFile: key.json\n  public:\n    type: gcs\n    anonymous: true\n    endpoint: http://127.0.0.1:4443\n  wi:\n    type: gcs\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sources["gcs"]
	if s.CredentialsFile != filepath.Join(dir, "key.json") {
		t.Errorf("credentialsFile %q, want it relative to the sources file", s.CredentialsFile)
	}
	for _, shown := range []string{s.String(), fmt.Sprintf("%#v", s), fmt.Sprint(s.LogValue())} {
		if strings.Contains(shown, "PRIVATE") || !strings.Contains(shown, "key.json") {
			t.Errorf("shown as %s", shown)
		}
	}
	if got := c.Sources["wi"].String(); !strings.Contains(got, "Application Default Credentials") || !strings.Contains(got, "storage.googleapis.com") {
		t.Errorf("a source without credentials shows as %s", got)
	}
	for body, text := range map[string]string{
		"sources:\n  g:\n    type: gcs\n    credentialsFile: missing.json\n":                  "credentialsFile",
		"sources:\n  g:\n    type: gcs\n    credentialsFile: key.json\n    anonymous: true\n": "use one",
		"sources:\n  g:\n    type: gcs\n    region: us-east1\n":                               "type: gcs takes",
		"sources:\n  g:\n    type: gcs\n    token: x\n":                                       "type: gcs takes",
		"sources:\n  g:\n    credentialsFile: key.json\n":                                     "for sources of type: gcs",
		"sources:\n  g:\n    type: gcs\n    endpoint: ftp://x\n":                              "endpoint",
	} {
		if _, err := fetch.LoadConfig(write(body)); err == nil || !strings.Contains(err.Error(), text) {
			t.Errorf("%q: %v, want an error saying %q", body, err, text)
		}
	}
}

// A lying server cannot make the fetcher write outside the model, hold a
// listing without bound, or take sizes it does not serve.
func TestGCSLyingServer(t *testing.T) {
	var body func(w http.ResponseWriter, r *http.Request)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { body(w, r) }))
	defer srv.Close()
	root := t.TempDir()
	store, err := cache.Open(filepath.Join(root, "cache"), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f, err := fetch.New(map[string]fetch.Source{"evil": {Type: fetch.SourceGCS, Endpoint: srv.URL, Anonymous: true}},
		fetch.WithMaxAttempts(2), fetch.WithListLimits(0, 20, 0))
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "gs://models/m?source=evil")
	ctx := context.Background()
	const md5A = "DMF1ucDxtqgxw5niaXcmYQ=="
	listing := func(items ...string) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"items":[`+strings.Join(items, ",")+`]}`)
		}
	}
	gen := 0 // a new one per object: the store would reuse bytes by (token, size)
	obj := func(name string, size int64) string {
		gen++
		return fmt.Sprintf(`{"name":%q,"size":"%d","generation":"%d","md5Hash":%q}`, name, size, gen, md5A)
	}

	body = listing(obj("m/../../../escaped", 1))
	if _, err := f.List(ctx, ref, nil); !errors.Is(err, source.ErrProtocol) || !strings.Contains(err.Error(), "relative path") {
		t.Errorf("an escaping name: %v", err)
	}
	n := 0
	body = func(w http.ResponseWriter, r *http.Request) {
		n++
		fmt.Fprintf(w, `{"items":[],"nextPageToken":"p%d"}`, n)
	}
	if _, err := f.List(ctx, ref, nil); !errors.Is(err, fetch.ErrLimit) || n != 20 {
		t.Errorf("endless pages: %v after %d pages", err, n)
	}

	// Listed bigger than the cache: refused before a byte is read.
	body = listing(obj("m/huge", 1<<40))
	m, err := f.List(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Fetch(ctx, ref, nil, m, store, nil); err == nil {
		t.Error("a 1 TiB file fit a 1 GiB cache")
	}
	// Served shorter, longer, or as another size than listed.
	for name, serve := range map[string]func(w http.ResponseWriter, r *http.Request){
		"short": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.WriteHeader(206)
			w.(http.Flusher).Flush()
			io.WriteString(w, "abc")
		},
		"long": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.WriteHeader(206)
			w.(http.Flusher).Flush()
			io.WriteString(w, strings.Repeat("x", 1000))
		},
		"resized": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/101")
			w.WriteHeader(206)
			io.WriteString(w, strings.Repeat("x", 100))
		},
	} {
		body = listing(obj("m/w", 100))
		m, err := f.List(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		body = serve
		full, _, err := f.Fetch(ctx, ref, nil, m, store, nil)
		switch name {
		case "long": // cut at the range: the bytes are the 100 listed
			if err != nil || full.Files[0].Size != 100 {
				t.Errorf("%s: %v", name, err)
			}
		case "resized":
			if !errors.Is(err, fetch.ErrChanged) {
				t.Errorf("%s: %v, want ErrChanged", name, err)
			}
		default:
			if err == nil {
				t.Errorf("%s: fetched", name)
			}
		}
	}
	// Nothing landed beside the cache.
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Errorf("the temp dir holds %d entries, want only the cache", len(ents))
	}
	if _, err := os.Stat(filepath.Join(root, "escaped")); err == nil {
		t.Error("a file escaped the model")
	}
}

// Workload identity: a source without credentials uses the agent's
// Application Default Credentials, which on GKE come from the metadata
// server (here a fake one, through GCE_METADATA_HOST). Its tokens go to the
// source's endpoint, never to an endpoint a ref names.
func TestGCSWorkloadIdentity(t *testing.T) {
	var tokens atomic.Int64
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Metadata-Flavor", "Google")
		switch {
		case r.Header.Get("Metadata-Flavor") != "Google":
			w.WriteHeader(http.StatusForbidden)
		case strings.HasPrefix(r.URL.Path, "/computeMetadata/v1/instance/service-accounts/default/token"):
			tokens.Add(1)
			claims := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + agentSA + `"}`))
			fmt.Fprintf(w, `{"access_token":"e30.%s.sig","expires_in":3600,"token_type":"Bearer"}`, claims)
		case r.URL.Path == "/computeMetadata/v1/project/project-id":
			io.WriteString(w, "test")
		default:
			http.NotFound(w, r)
		}
	}))
	defer md.Close()
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())

	srv := gcstest.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "m/config.json", []byte("{}"))
	guard := gcstest.NewGuard(t, srv.Endpoint)
	guard.Allow("models", agentSA)
	f, err := fetch.New(map[string]fetch.Source{"gke": {Type: fetch.SourceGCS, Endpoint: guard.URL}},
		fetch.WithAllowedEndpoints([]string{guard.URL}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.List(ctx, mustRef(t, "gs://models/m?source=gke"), nil); err != nil {
		t.Fatalf("through workload identity: %v", err)
	}
	if tokens.Load() == 0 {
		t.Error("no token was asked of the metadata server")
	}
	before := len(guard.Seen())
	if _, err := f.List(ctx, mustRef(t, "gs://models/m?endpoint="+guard.URL), nil); !errors.Is(err, fetch.ErrAccessDenied) {
		t.Errorf("a ref's own endpoint: %v, want it refused as anonymous", err)
	}
	for _, who := range guard.Seen()[before:] {
		if who != "" {
			t.Errorf("the agent's identity %q went to an endpoint a ref names", who)
		}
	}
}
