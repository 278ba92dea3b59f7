package az_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/az"
)

// liar is a blob service that answers listings with pages and reads with
// what its fields say.
type liar struct {
	page     func(marker string) string // a listing page's XML
	read     func(w http.ResponseWriter, r *http.Request)
	requests atomic.Int64
}

func (l *liar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.requests.Add(1)
	if r.URL.Query().Get("comp") == "list" {
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, l.page(r.URL.Query().Get("marker")))
		return
	}
	l.read(w, r)
}

func blobXML(name string, size int64, etag string) string {
	return fmt.Sprintf("<Blob><Name>%s</Name><Properties><Content-Length>%d</Content-Length><Etag>%s</Etag><BlobType>BlockBlob</BlobType></Properties></Blob>", name, size, etag)
}

func pageXML(next string, blobs ...string) string {
	return `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c"><Blobs>` + strings.Join(blobs, "") +
		"</Blobs><NextMarker>" + next + "</NextMarker></EnumerationResults>"
}

func liarModel(t *testing.T, l *liar, o az.Options) *az.Model {
	t.Helper()
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	o.Account, o.Endpoint = "acct", srv.URL
	c, err := az.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c.Model("c", "m")
}

func TestHostileListing(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		page  func(marker string) string
		class error
	}{
		"dot-dot name":     {func(string) string { return pageXML("", blobXML("m/../../etc/passwd", 3, "0x1")) }, source.ErrProtocol},
		"absolute in name": {func(string) string { return pageXML("", blobXML("m//abs", 3, "0x1")) }, source.ErrProtocol},
		"outside prefix":   {func(string) string { return pageXML("", blobXML("other/x", 3, "0x1")) }, source.ErrProtocol},
		"negative size":    {func(string) string { return pageXML("", blobXML("m/a", -5, "0x1")) }, source.ErrProtocol},
		"huge size":        {func(string) string { return pageXML("", blobXML("m/a", 1<<62, "0x1")) }, source.ErrProtocol},
		"no etag":          {func(string) string { return pageXML("", blobXML("m/a", 3, "")) }, source.ErrProtocol},
		"listed twice":     {func(string) string { return pageXML("", blobXML("m/a", 3, "0x1"), blobXML("m/a", 3, "0x2")) }, source.ErrProtocol},
		"same marker": {func(string) string {
			return pageXML("again", blobXML("m/a", 3, "0x1"))
		}, source.ErrProtocol},
		"endless markers": {func(marker string) string {
			n, _ := strconv.Atoi(marker)
			return pageXML(strconv.Itoa(n+1), blobXML(fmt.Sprintf("m/f%d", n), 3, "0x1"))
		}, source.ErrLimit},
		"endless page": {func(string) string {
			return pageXML("", strings.Repeat(blobXML("m/a", 3, "0x1"), 40_000)) // ~4 MiB
		}, source.ErrLimit},
		"not XML": {func(string) string { return "{]" }, source.ErrProtocol},
	} {
		l := &liar{page: tc.page}
		m := liarModel(t, l, az.Options{MaxPages: 50, MaxPageBytes: 1 << 20})
		l2, err := m.List(ctx)
		if !errors.Is(err, tc.class) || len(l2.Files) != 0 {
			t.Errorf("%s: %v (%d files), want %v", name, err, len(l2.Files), tc.class)
		}
		if n := l.requests.Load(); n > 51 {
			t.Errorf("%s: %d requests", name, n)
		}
	}
}

func TestHostileReads(t *testing.T) {
	ctx := context.Background()
	f := model.File{Path: "a", Size: 1000, ETag: "0x1"}
	body := strings.Repeat("x", 5000)
	for name, tc := range map[string]struct {
		read  func(w http.ResponseWriter, r *http.Request)
		class error // of Open, or of reading the body when eof
		eof   bool
	}{
		"longer body": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-19/1000")
			w.Header().Set("ETag", `"0x1"`)
			w.WriteHeader(206)
			io.WriteString(w, body) // no Content-Length: chunked
		}, nil, false},
		"shorter body": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-19/1000")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(206)
			io.WriteString(w, "xxxx")
		}, io.ErrUnexpectedEOF, true},
		"range ignored": {func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			io.WriteString(w, body[:1000])
		}, source.ErrProtocol, false},
		"other range": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-9/1000")
			w.WriteHeader(206)
			io.WriteString(w, body[:10])
		}, source.ErrProtocol, false},
		"other size": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-19/2000")
			w.WriteHeader(206)
			io.WriteString(w, body[:10])
		}, source.ErrChanged, false},
		"other etag": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-19/1000")
			w.Header().Set("ETag", `"0x2"`)
			w.WriteHeader(206)
			io.WriteString(w, body[:10])
		}, source.ErrChanged, false},
		"If-Match failed": {func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("If-Match") != `"0x1"` {
				w.WriteHeader(400)
				return
			}
			w.Header().Set("x-ms-error-code", "ConditionNotMet")
			w.WriteHeader(412)
		}, source.ErrChanged, false},
		"endless 503 body": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-ms-error-code", "ServerBusy")
			w.WriteHeader(503)
			for range 64 { // 64 MiB, of which the client reads 64 KiB
				if _, err := w.Write([]byte(strings.Repeat("e", 1<<20))); err != nil {
					return
				}
			}
		}, source.ErrUnreachable, false},
		"403": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-ms-error-code", "AuthorizationFailure")
			w.WriteHeader(403)
		}, source.ErrAccessDenied, false},
		"404": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-ms-error-code", "BlobNotFound")
			w.WriteHeader(404)
		}, source.ErrNotFound, false},
	} {
		m := liarModel(t, &liar{read: tc.read}, az.Options{})
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := m.Open(ctx, f, 10, 20)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(r)
			r.Close()
			if err == nil && len(b) != 10 {
				t.Errorf("%s: read %d bytes, want 10", name, len(b))
			}
			if !tc.eof && tc.class != nil {
				t.Errorf("%s: opened, want %v", name, tc.class)
				continue
			}
		}
		switch {
		case tc.class == nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.class != nil && !errors.Is(err, tc.class):
			t.Errorf("%s: %v, want %v", name, err, tc.class)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if grew := int64(after.TotalAlloc) - int64(before.TotalAlloc); grew > 16<<20 {
			t.Errorf("%s: allocated %d MiB", name, grew>>20)
		}
	}
}

// failingToken is an Entra ID credential that cannot get a token.
type failingToken struct{}

func (failingToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("AADSTS700016: no such application")
}

// An identity that gets no token is access denied, never retried, and no
// request reaches the service; a token goes over HTTPS only.
func TestTokenCredentialFailure(t *testing.T) {
	l := &liar{page: func(string) string { return pageXML("", blobXML("m/a", 3, "0x1")) }}
	srv := httptest.NewTLSServer(l)
	defer srv.Close()
	c, err := az.New(az.Options{Account: "acct", Endpoint: srv.URL, Credential: failingToken{}, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Model("c", "m").List(context.Background())
	if !errors.Is(err, source.ErrAccessDenied) || source.Temporary(err) || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("%v", err)
	}
	if n := l.requests.Load(); n != 0 {
		t.Errorf("%d requests without a token", n)
	}
	if _, err := az.New(az.Options{Account: "acct", Endpoint: "http://127.0.0.1:10000", Credential: failingToken{}}); err == nil {
		t.Error("a token credential over plain HTTP was accepted")
	}
}
