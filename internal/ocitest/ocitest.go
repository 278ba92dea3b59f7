// Package ocitest runs a real OCI registry in the test process
// (go-containerregistry's pkg/registry on an httptest server, plain HTTP)
// and pushes model artifacts to it with oras-go, as `oras push` would: one
// layer per file, titled with its path. Options put basic auth in front of
// it (or a token service on its own origin, as Docker Hub and GHCR have)
// and serve blobs from a second "storage" server by redirect, as
// registries backed by object storage do; Corrupt changes a blob's bytes
// behind its digest.
package ocitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	regref "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Registry is a running registry.
type Registry struct {
	URL  string // http://127.0.0.1:PORT
	Host string // 127.0.0.1:PORT, as in oci://HOST/REPO

	user, pass string
	// refresh is the identity token the token service also takes;
	// tokens are the bearer tokens it issued.
	refresh  string
	tokenSrv *httptest.Server
	tokens   map[string]bool
	redirect bool
	blobs    *blobs
	storage  *httptest.Server

	mu   sync.Mutex
	reqs []Request
}

// Request is one request a server got.
type Request struct {
	Server        string // "registry", "storage" or "token"
	Method, Path  string
	Range         string
	Authorization string
}

// Option configures Start.
type Option func(*Registry)

// WithBasicAuth makes every request need user and pass (the registry
// answers 401 with a Basic challenge otherwise).
func WithBasicAuth(user, pass string) Option {
	return func(r *Registry) { r.user, r.pass = user, pass }
}

// WithTokenAuth puts a token service in front, as the distribution spec's
// token authentication has it: the registry answers 401 with a Bearer
// challenge naming the service's realm (another origin), the service
// trades user and pass (HTTP basic, GET) or the refresh token (an
// identity token, OAuth2 POST) for a bearer token, and the registry takes
// only bearer tokens it issued.
func WithTokenAuth(user, pass, refresh string) Option {
	return func(r *Registry) { r.user, r.pass, r.refresh, r.tokens = user, pass, refresh, map[string]bool{} }
}

// WithRedirect serves blob reads from a second server the registry
// redirects to (307), which needs no credentials.
func WithRedirect() Option { return func(r *Registry) { r.redirect = true } }

// Start runs a registry until the test ends.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r := &Registry{blobs: &blobs{m: map[string][]byte{}}}
	for _, o := range opts {
		o(r)
	}
	r.storage = httptest.NewServer(http.HandlerFunc(r.serveStorage))
	t.Cleanup(r.storage.Close)
	r.blobs.redirect = func(h string) string {
		if !r.redirect {
			return ""
		}
		return r.storage.URL + "/blobs/" + h
	}
	if r.tokens != nil {
		r.tokenSrv = httptest.NewServer(http.HandlerFunc(r.serveToken))
		t.Cleanup(r.tokenSrv.Close)
	}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(r.blobs))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		r.record("registry", q)
		if r.tokens != nil {
			if !r.bearerOK(q) {
				scope := ""
				if repo, _, ok := strings.Cut(strings.TrimPrefix(q.URL.Path, "/v2/"), "/manifests/"); ok {
					scope = `,scope="repository:` + repo + `:pull"`
				} else if repo, _, ok := strings.Cut(strings.TrimPrefix(q.URL.Path, "/v2/"), "/blobs/"); ok {
					scope = `,scope="repository:` + repo + `:pull"`
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+r.tokenSrv.URL+`/token",service="ocitest"`+scope)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		} else if r.user != "" {
			if u, p, ok := q.BasicAuth(); !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="ocitest"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		h.ServeHTTP(w, q)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *Registry) bearerOK(q *http.Request) bool {
	tok, ok := strings.CutPrefix(q.Header.Get("Authorization"), "Bearer ")
	r.mu.Lock()
	defer r.mu.Unlock()
	return ok && r.tokens[tok]
}

// serveToken issues a bearer token for the login (GET with basic auth) or
// the refresh token (POST grant_type=refresh_token), else 401.
func (r *Registry) serveToken(w http.ResponseWriter, q *http.Request) {
	r.record("token", q)
	ok := false
	switch q.Method {
	case http.MethodGet:
		u, p, basic := q.BasicAuth()
		ok = basic && u == r.user && p == r.pass
	case http.MethodPost:
		ok = q.ParseForm() == nil && q.PostForm.Get("grant_type") == "refresh_token" &&
			r.refresh != "" && q.PostForm.Get("refresh_token") == r.refresh
	}
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad login"}]}`)
		return
	}
	tok := rand.Text()
	r.mu.Lock()
	r.tokens[tok] = true
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

func (r *Registry) record(server string, q *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, Request{Server: server, Method: q.Method, Path: q.URL.Path,
		Range: q.Header.Get("Range"), Authorization: q.Header.Get("Authorization")})
}

// Requests returns the requests both servers got so far.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// serveStorage answers GET /blobs/sha256:HEX with ranges, as object
// storage does.
func (r *Registry) serveStorage(w http.ResponseWriter, q *http.Request) {
	r.record("storage", q)
	b, ok := r.blobs.get(strings.TrimPrefix(q.URL.Path, "/blobs/"))
	if !ok {
		http.NotFound(w, q)
		return
	}
	http.ServeContent(w, q, "", time.Time{}, bytes.NewReader(b))
}

// File is one file of a pushed model: a layer titled Path, of MediaType
// (default application/vnd.oci.image.layer.v1.tar, as oras push writes a
// file), with Annotations added (an empty value removes one: a layer
// without a title).
type File struct {
	Path        string
	Data        []byte
	MediaType   string
	Annotations map[string]string
}

// Push pushes files as one manifest of repo, tagged tag, and returns the
// manifest's digest.
func (r *Registry) Push(t testing.TB, repo, tag string, files []File) string {
	t.Helper()
	ctx := context.Background()
	store := memory.New()
	var layers []ocispec.Descriptor
	for _, f := range files {
		mt := f.MediaType
		if mt == "" {
			mt = ocispec.MediaTypeImageLayer
		}
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(f.Data), Size: int64(len(f.Data)),
			Annotations: map[string]string{ocispec.AnnotationTitle: f.Path}}
		for k, v := range f.Annotations {
			if v == "" {
				delete(d.Annotations, k)
			} else {
				d.Annotations[k] = v
			}
		}
		if err := store.Push(ctx, d, bytes.NewReader(f.Data)); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
		layers = append(layers, d)
	}
	desc, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.modelcache.test.v1",
		oras.PackManifestOptions{Layers: layers, ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "2025-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Tag(ctx, desc, tag); err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(ctx, store, tag, r.Repository(t, repo), tag, oras.DefaultCopyOptions); err != nil {
		t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
	return desc.Digest.String()
}

// PushRaw pushes a manifest (or index) of mediaType as it is, tagged tag,
// and returns its digest.
func (r *Registry) PushRaw(t testing.TB, repo, tag, mediaType string, body []byte) string {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
	if err := r.Repository(t, repo).PushReference(context.Background(), d, bytes.NewReader(body), tag); err != nil {
		t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
	return d.Digest.String()
}

// Index is an OCI image index of the manifests (digest → platform "os/arch").
func Index(manifests map[string]string) []byte {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for d, p := range manifests {
		os, arch, _ := strings.Cut(p, "/")
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
			Digest: digest.Digest(d), Size: 100, Platform: &ocispec.Platform{OS: os, Architecture: arch}})
	}
	b, _ := json.Marshal(idx)
	return b
}

// Repository is a client for repo with the registry's credentials.
func (r *Registry) Repository(t testing.TB, repo string) *remote.Repository {
	t.Helper()
	c := &auth.Client{Client: http.DefaultClient}
	if r.user != "" {
		c.Credential = auth.StaticCredential(r.Host, auth.Credential{Username: r.user, Password: r.pass})
	}
	return &remote.Repository{Client: c, PlainHTTP: true, Reference: regref.Reference{Registry: r.Host, Repository: repo}}
}

// Corrupt replaces the bytes of blob dgst ("sha256:…"), keeping its digest.
func (r *Registry) Corrupt(dgst string, data []byte) {
	r.blobs.mu.Lock()
	defer r.blobs.mu.Unlock()
	r.blobs.m[dgst] = data
}

// SHA256 is "sha256:" and the hex SHA-256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// blobs is the registry's blob store: in memory, optionally redirecting
// reads to the storage server.
type blobs struct {
	mu       sync.Mutex
	m        map[string][]byte
	redirect func(h string) string
}

func (b *blobs) get(h string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.m[h]
	return d, ok
}

func (b *blobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	d, ok := b.get(h.String())
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(d)), nil
}

func (b *blobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	d, ok := b.get(h.String())
	if !ok {
		return nil, registry.ErrNotFound
	}
	if loc := b.redirect(h.String()); loc != "" {
		return nil, registry.RedirectError{Location: loc, Code: http.StatusTemporaryRedirect}
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

func (b *blobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	d, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[h.String()] = d
	return nil
}
