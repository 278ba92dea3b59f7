package fetch_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/ocitest"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// ociEnv is a registry (with a login, when given), a store and a fetcher
// with the registry as source "corp".
func ociEnv(t *testing.T, user, pass string) (*ocitest.Registry, *cache.Store, *fetch.Fetcher) {
	t.Helper()
	var opts []ocitest.Option
	if user != "" {
		opts = append(opts, ocitest.WithBasicAuth(user, pass), ocitest.WithRedirect())
	}
	reg := ocitest.Start(t, opts...)
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f, err := fetch.New(map[string]fetch.Source{"corp": {Type: fetch.SourceOCI, Registry: reg.Host, PlainHTTP: true, Username: user, Password: pass}},
		fetch.WithPartSize(model.LeafSize))
	if err != nil {
		t.Fatal(err)
	}
	return reg, store, f
}

func ociFiles() []ocitest.File {
	big := make([]byte, 2*model.LeafSize+12345) // three parts
	for i := range big {
		big[i] = byte(i * 31)
	}
	return []ocitest.File{
		{Path: "config.json", Data: []byte(`{"architectures":["LlamaForCausalLM"]}`)},
		{Path: "model.safetensors", Data: big},
		{Path: "pytorch_model.bin", Data: big[:1000]},
		{Path: "original/consolidated.00.pth", Data: big[:5000]},
		{Path: "empty.txt"},
	}
}

func ociBytes(files []ocitest.File, keep func(string) bool) map[string][]byte {
	out := map[string][]byte{}
	for _, f := range files {
		if keep == nil || keep(f.Path) {
			out[f.Path] = f.Data
		}
	}
	return out
}

func TestFetchOCIModel(t *testing.T) {
	reg, store, f := ociEnv(t, "", "")
	files := ociFiles()
	digest := reg.Push(t, "org/llm", "v1", files)

	ref := mustRef(t, "oci://"+reg.Host+"/org/llm:v1?source=corp")
	m, st := listAndFetch(t, f, ref, store)
	if m.SourceRevision != digest {
		t.Errorf("manifest revision %q, want the manifest digest %s", m.SourceRevision, digest)
	}
	checkTree(t, store, m, ociBytes(files, nil))
	if want := int64(len(files[1].Data) + 1000 + 5000 + len(files[0].Data)); st.BytesFetched != want {
		t.Errorf("fetched %d bytes, want %d", st.BytesFetched, want)
	}

	// Only the weights and configs.
	sel := mustRef(t, "oci://"+reg.Host+"/org/llm:v1?source=corp&include=*.safetensors,*.json&exclude=original/")
	m2, st2 := listAndFetch(t, f, sel, store)
	checkTree(t, store, m2, ociBytes(files, func(p string) bool { return p == "config.json" || p == "model.safetensors" }))
	if st2.BytesFetched != 0 {
		t.Errorf("the selection fetched %d bytes; every file was held", st2.BytesFetched)
	}
	if _, err := f.List(context.Background(), mustRef(t, "oci://"+reg.Host+"/org/llm:v1?source=corp&include=*.gguf"), nil); !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("a pattern that selects nothing: %v, want ErrNotFound", err)
	}
	if _, err := f.List(context.Background(), mustRef(t, "oci://"+reg.Host+"/org/llm:v9?source=corp"), nil); !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("a missing tag: %v, want ErrNotFound", err)
	}
}

// A tag names what it names when listed: the download reads that
// manifest's blobs even when the tag moves in between, and a digest ref
// keeps naming the old manifest.
func TestFetchOCITagVsDigest(t *testing.T) {
	reg, store, f := ociEnv(t, "", "")
	ctx := context.Background()
	oldFiles := []ocitest.File{{Path: "w.bin", Data: []byte("old weights")}}
	old := reg.Push(t, "m", "prod", oldFiles)
	tag := mustRef(t, "oci://"+reg.Host+"/m:prod?source=corp")
	listed, err := f.List(ctx, tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	newFiles := []ocitest.File{{Path: "w.bin", Data: []byte("new weights!")}}
	next := reg.Push(t, "m", "prod", newFiles)
	full, _, err := f.Fetch(ctx, tag, nil, listed, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, store, full, ociBytes(oldFiles, nil))

	m2, _ := listAndFetch(t, f, tag, store)
	if m2.SourceRevision != next || m2.Revision() == full.Revision() {
		t.Errorf("after the move: %s, want %s", m2.SourceRevision, next)
	}
	checkTree(t, store, m2, ociBytes(newFiles, nil))
	byDigest := mustRef(t, "oci://"+reg.Host+"/m@"+old+"?source=corp")
	m3, _ := listAndFetch(t, f, byDigest, store)
	if m3.SourceRevision != old {
		t.Errorf("by digest: %s, want %s", m3.SourceRevision, old)
	}
	checkTree(t, store, m3, ociBytes(oldFiles, nil))
	// A manifest without a digest to read is refused, not fetched from the tag.
	bad := *listed
	bad.SourceRevision = "prod"
	if _, _, err := f.Fetch(ctx, tag, nil, &bad, store, nil); err == nil || !strings.Contains(err.Error(), "list the model again") {
		t.Errorf("a manifest without a digest: %v", err)
	}
}

// A blob whose bytes are not its digest fails the download, and nothing
// of it is stored.
func TestFetchOCIDigestMismatch(t *testing.T) {
	reg, store, f := ociEnv(t, "", "")
	files := ociFiles()
	reg.Push(t, "m", "v1", files)
	bad := append([]byte(nil), files[2].Data...)
	bad[500] ^= 1
	reg.Corrupt(ocitest.SHA256(files[2].Data), bad)

	ref := mustRef(t, "oci://"+reg.Host+"/m:v1?source=corp")
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Fetch(context.Background(), ref, nil, m, store, nil)
	if !errors.Is(err, fetch.ErrChanged) || !strings.Contains(err.Error(), "SHA-256") || !strings.Contains(err.Error(), "pytorch_model.bin") {
		t.Fatalf("corrupt blob: %v; want ErrChanged naming the file and SHA-256", err)
	}
	filepath.Walk(filepath.Join(store.Root(), "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() == int64(len(bad)) {
			t.Errorf("a blob of the corrupt file's size is stored: %s", p)
		}
		return nil
	})
}

// A source's login goes to its own registry only; plain HTTP only through
// a source that says so; a source of another type is refused.
func TestOCIRefRules(t *testing.T) {
	reg, _, f := ociEnv(t, "puller", "s3cret-pw")
	reg.Push(t, "m", "v1", ociFiles()[:1])
	other := ocitest.Start(t)
	other.Push(t, "m", "v1", ociFiles()[:1])
	hub, err := fetch.New(map[string]fetch.Source{"hub": {Type: fetch.SourceHub}, "corp": {Type: fetch.SourceOCI, Registry: reg.Host}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for s, class := range map[string]error{
		"oci://" + other.Host + "/m:v1?source=corp": model.ErrInvalidRef,
		"oci://" + reg.Host + "/m:v1?source=nope":   fetch.ErrUnknownSource,
		"oci://" + reg.Host + "/m:v1":               fetch.ErrAccessDenied, // a registry the operator did not allow
	} {
		if _, err := f.List(ctx, mustRef(t, s), nil); !errors.Is(err, class) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want %v", s, err, class)
		}
	}
	if _, err := hub.List(ctx, mustRef(t, "oci://"+reg.Host+"/m:v1?source=hub"), nil); !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "type: oci") {
		t.Errorf("an oci:// ref with a Hub source: %v", err)
	}
	if _, err := hub.List(ctx, mustRef(t, "s3://bkt/m?source=corp"), nil); !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "OCI registry source") {
		t.Errorf("an s3:// ref with an OCI source: %v", err)
	}
	if _, err := hub.List(ctx, mustRef(t, "hf://org/m?source=corp"), nil); !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "OCI registry source") {
		t.Errorf("an hf:// ref with an OCI source: %v", err)
	}
	// An allowed registry is read over HTTPS (this one speaks plain HTTP).
	allowed, err := fetch.New(nil, fetch.WithAllowedEndpoints([]string{"https://" + reg.Host}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := allowed.List(ctx, mustRef(t, "oci://"+reg.Host+"/m:v1"), nil); !errors.Is(err, fetch.ErrUnreachable) {
		t.Errorf("an allowed registry without TLS: %v, want unreachable", err)
	}
	before := len(other.Requests())
	if _, err := allowed.List(ctx, mustRef(t, "oci://"+other.Host+"/m:v1"), nil); !errors.Is(err, fetch.ErrAccessDenied) || len(other.Requests()) != before {
		t.Errorf("a registry not allowed: %v, and %d requests reached it", err, len(other.Requests())-before)
	}
	for _, q := range other.Requests() {
		if q.Authorization != "" {
			t.Errorf("the other registry got credentials: %s %s", q.Method, q.Path)
		}
	}
}

// A hit checks the volume's own login: a model cached through the agent's
// source is not served to a volume whose login may not read it.
func TestOCIAccessWithVolumeCredentials(t *testing.T) {
	reg, store, f := ociEnv(t, "puller", "s3cret-pw")
	reg.Push(t, "private/llm", "v1", ociFiles())
	ref := mustRef(t, "oci://"+reg.Host+"/private/llm:v1?source=corp")
	listAndFetch(t, f, ref, store)

	ctx := context.Background()
	if err := f.CheckAccess(ctx, ref, &model.Credentials{AccessKeyID: "puller", SecretAccessKey: "s3cret-pw"}); err != nil {
		t.Errorf("the right login: %v", err)
	}
	err := f.CheckAccess(ctx, ref, &model.Credentials{AccessKeyID: "puller", SecretAccessKey: "wr0ng-pw"})
	if !errors.Is(err, fetch.ErrAccessDenied) || strings.Contains(err.Error(), "wr0ng") {
		t.Errorf("a wrong password: %v; want ErrAccessDenied without the password", err)
	}
	if err := f.CheckAccess(ctx, ref, &model.Credentials{Token: "hf_x"}); !errors.Is(err, model.ErrInvalidRef) {
		t.Errorf("a Hub token for an OCI model: %v", err)
	}
	// Without the source's login the registry says no.
	anon, _ := fetch.New(map[string]fetch.Source{"corp": {Type: fetch.SourceOCI, Registry: reg.Host, PlainHTTP: true}})
	if _, err := anon.List(ctx, ref, nil); !errors.Is(err, fetch.ErrAccessDenied) {
		t.Errorf("anonymous: %v", err)
	}
}

func TestOCISourcesFile(t *testing.T) {
	reg, store, _ := ociEnv(t, "puller", "s3cret-pw")
	reg.Push(t, "m", "v1", ociFiles()[:2])
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "password"), "s3cret-pw\n")
	path := filepath.Join(dir, "sources.yaml")
	writeFile(t, path, fmt.Sprintf("sources:\n  corp:\n    type: oci\n    registry: %s\n    plainHTTP: true\n    username: puller\n    passwordFile: password\n", reg.Host))
	sources, err := fetch.LoadSources(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetch.New(sources)
	if err != nil {
		t.Fatal(err)
	}
	listAndFetch(t, f, mustRef(t, "oci://"+reg.Host+"/m:v1?source=corp"), store)

	s := sources["corp"]
	s.Password, s.PasswordFile = "s3cret-pw", ""
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("source", "src", s)
	out := fmt.Sprintf("%v %+v %#v", s, s, s) + buf.String()
	if strings.Contains(out, "s3cret") || !strings.Contains(out, reg.Host) || !strings.Contains(out, `user \"puller\"`) {
		t.Errorf("a source shows: %s", out)
	}

	for _, c := range []struct{ yaml, frag string }{
		{"type: oci\n    registry: r\n    endpoint: https://r", "endpoint"},
		{"type: oci\n    username: u\n    password: hunter2", "registry"},
		{"type: oci\n    registry: Reg.Example", "lowercase"},
		{"type: oci\n    registry: r/x", "registry"},
		{"type: oci\n    registry: r\n    username: u", "needs a password"},
		{"type: oci\n    registry: r\n    password: hunter2", "needs a password"},
		{"type: oci\n    registry: r\n    username: u\n    password: hunter2\n    passwordFile: p", "use one"},
		{"type: oci\n    registry: r\n    username: u\n    passwordFile: /nonexistent/pw", "/nonexistent/pw"},
		{"region: us-east-1\n    plainHTTP: true", "type: oci"},
		{"type: hf\n    password: hunter2", "type: oci"},
	} {
		writeFile(t, path, "sources:\n  s:\n    "+c.yaml+"\n")
		_, err := fetch.LoadSources(path)
		if err == nil || !strings.Contains(err.Error(), c.frag) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: got %v; want an error mentioning %q without the secret", c.yaml, err, c.frag)
		}
	}
}

// A registry with token authentication (the realm on another origin, as
// Docker Hub's and GHCR's are) read with the login of a volume's
// kubernetes.io/dockerconfigjson Secret, by password and by identity token;
// the registry itself never sees the password, and a config without the
// registry is access denied.
func TestOCIDockerConfigAndTokenAuth(t *testing.T) {
	reg := ocitest.Start(t, ocitest.WithTokenAuth("puller", "s3cret-pw", "refresh-s3cret"))
	reg.Push(t, "private/llm", "v1", ociFiles())
	f, err := fetch.New(map[string]fetch.Source{"corp": {Type: fetch.SourceOCI, Registry: reg.Host, PlainHTTP: true}}, fetch.WithPartSize(model.LeafSize))
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "oci://"+reg.Host+"/private/llm:v1?source=corp")
	ctx := context.Background()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for name, cfg := range map[string]string{
		"auth":           `{"auths":{"http://` + reg.Host + `":{"auth":"` + b64("puller:s3cret-pw") + `"}}}`,
		"identity token": `{"auths":{"` + reg.Host + `":{"username":"<token>","identitytoken":"refresh-s3cret"}}}`,
	} {
		creds := &model.Credentials{DockerConfig: cfg}
		store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.List(ctx, ref, creds)
		if err != nil {
			t.Fatalf("%s: list: %v", name, err)
		}
		full, _, err := f.Fetch(ctx, ref, creds, m, store, nil)
		if err != nil {
			t.Fatalf("%s: fetch: %v", name, err)
		}
		checkTree(t, store, full, ociBytes(ociFiles(), nil))
		store.Close()
		if err := f.CheckAccess(ctx, ref, creds); err != nil {
			t.Errorf("%s: access: %v", name, err)
		}
	}
	for name, c := range map[string]struct {
		cfg   string
		class error
	}{
		"other registry": {`{"auths":{"ghcr.io":{"auth":"` + b64("puller:s3cret-pw") + `"}}}`, fetch.ErrAccessDenied},
		"wrong password": {`{"auths":{"` + reg.Host + `":{"auth":"` + b64("puller:wr0ng") + `"}}}`, fetch.ErrAccessDenied},
		"wrong token":    {`{"auths":{"` + reg.Host + `":{"identitytoken":"wr0ng"}}}`, fetch.ErrAccessDenied},
		"not json":       {`{"auths":{"` + reg.Host + `":{"auth":"wr0ng"`, model.ErrInvalidRef},
	} {
		err := f.CheckAccess(ctx, ref, &model.Credentials{DockerConfig: c.cfg})
		if !errors.Is(err, c.class) || strings.Contains(err.Error(), "wr0ng") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v; want %v without a credential", name, err, c.class)
		}
	}
	if err := f.CheckAccess(ctx, ref, &model.Credentials{DockerConfig: `{"auths":{}}`, Token: "hf_x"}); !errors.Is(err, model.ErrInvalidRef) {
		t.Errorf("a docker config and a Hub token: %v", err)
	}
	tokenCalls := 0
	for _, q := range reg.Requests() {
		switch {
		case q.Server == "token":
			tokenCalls++
		case q.Authorization != "" && !strings.HasPrefix(q.Authorization, "Bearer "):
			t.Errorf("the %s server got %q on %s %s; want bearer tokens only", q.Server, q.Authorization, q.Method, q.Path)
		}
	}
	if tokenCalls == 0 {
		t.Error("the token service was never asked")
	}
}

// A source's login may come from a mounted docker config file, read
// again for every listing.
func TestOCISourceDockerConfigFile(t *testing.T) {
	reg := ocitest.Start(t, ocitest.WithTokenAuth("puller", "s3cret-pw", ""))
	reg.Push(t, "m", "v1", ociFiles()[:2])
	dir := t.TempDir()
	cfg := filepath.Join(dir, ".dockerconfigjson")
	writeFile(t, cfg, `{"auths":{"`+reg.Host+`":{"username":"puller","password":"s3cret-pw"}}}`)
	path := filepath.Join(dir, "sources.yaml")
	writeFile(t, path, fmt.Sprintf("sources:\n  corp:\n    type: oci\n    registry: %s\n    plainHTTP: true\n    dockerConfigFile: .dockerconfigjson\n", reg.Host))
	sources, err := fetch.LoadSources(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetch.New(sources)
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "oci://"+reg.Host+"/m:v1?source=corp")
	if _, err := f.List(context.Background(), ref, nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, `{"auths":{"`+reg.Host+`":{"username":"puller","password":"r0tated"}}}`)
	if _, err := f.List(context.Background(), ref, nil); !errors.Is(err, fetch.ErrAccessDenied) || strings.Contains(err.Error(), "r0tated") {
		t.Errorf("after the Secret changed to a wrong password: %v", err)
	}
	for _, c := range []struct{ yaml, frag string }{
		{"type: oci\n    registry: r\n    username: u\n    dockerConfigFile: c", "no username"},
		{"type: oci\n    registry: r\n    dockerConfigFile: /nonexistent/c", "/nonexistent/c"},
		{"type: hf\n    dockerConfigFile: c", "type: oci"},
	} {
		writeFile(t, path, "sources:\n  s:\n    "+c.yaml+"\n")
		if _, err := fetch.LoadSources(path); err == nil || !strings.Contains(err.Error(), c.frag) {
			t.Errorf("%q: got %v; want an error mentioning %q", c.yaml, err, c.frag)
		}
	}
}
