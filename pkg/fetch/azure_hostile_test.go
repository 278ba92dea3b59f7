package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// A blob service that lies, through the whole fetcher: the download fails
// cleanly, nothing lands outside the store, and nothing wrong is stored.
func TestAzureHostileFetch(t *testing.T) {
	const size = 3000
	for name, tc := range map[string]struct {
		list  string
		read  func(w http.ResponseWriter, r *http.Request)
		class error // of List (listFails) or Fetch
		lists bool  // the listing succeeds
	}{
		"escaping name": {list: "m/../../../../tmp/pwned", class: model.ErrUnsafeKey},
		"short bodies": {list: "m/w.bin", lists: true, class: fetch.ErrUnreachable, read: func(w http.ResponseWriter, r *http.Request) {
			var from, to int64
			fmt.Sscanf(r.Header.Get("x-ms-range"), "bytes=%d-%d", &from, &to)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, size))
			w.Header().Set("Content-Length", fmt.Sprint(to-from+1))
			w.WriteHeader(206)
			io.WriteString(w, strings.Repeat("x", int(to-from+1)/2))
		}},
		"long bodies, wrong bytes": {list: "m/w.bin", lists: true, class: nil, read: func(w http.ResponseWriter, r *http.Request) {
			var from, to int64
			fmt.Sscanf(r.Header.Get("x-ms-range"), "bytes=%d-%d", &from, &to)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, size))
			w.WriteHeader(206)
			io.WriteString(w, strings.Repeat("y", 10*size)) // chunked, far past the range
		}},
		"range ignored": {list: "m/w.bin", lists: true, class: source.ErrProtocol, read: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			io.WriteString(w, strings.Repeat("z", 2*size))
		}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("comp") == "list" {
					fmt.Fprintf(w, `<?xml version="1.0"?><EnumerationResults><Blobs><Blob><Name>%s</Name><Properties><Content-Length>%d</Content-Length><Etag>0x1</Etag></Properties></Blob></Blobs><NextMarker/></EnumerationResults>`, tc.list, size)
					return
				}
				tc.read(w, r)
			}))
			defer srv.Close()
			root := t.TempDir()
			store, err := cache.Open(filepath.Join(root, "store"), cache.Options{Capacity: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			f, err := fetch.New(nil, fetch.WithAllowedEndpoints([]string{srv.URL}), fetch.WithMaxAttempts(2))
			if err != nil {
				t.Fatal(err)
			}
			ref := mustRef(t, "az://acct/ccc/m?endpoint="+srv.URL)
			ctx := context.Background()
			m, err := f.List(ctx, ref, &model.Credentials{AccountKey: "a2V5"})
			if !tc.lists {
				if !errors.Is(err, tc.class) {
					t.Fatalf("list: %v, want %v", err, tc.class)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			full, _, err := f.Fetch(ctx, ref, &model.Credentials{AccountKey: "a2V5"}, m, store, nil)
			switch {
			case tc.class == nil && err != nil:
				t.Fatal(err)
			case tc.class == nil:
				// The service's bytes, exactly the listed size of them.
				checkTree(t, store, full, map[string][]byte{"w.bin": []byte(strings.Repeat("y", size))})
			case !errors.Is(err, tc.class):
				t.Fatalf("fetch: %v, want %v", err, tc.class)
			}
			ents, _ := os.ReadDir(root)
			if len(ents) != 1 {
				t.Errorf("files beside the store: %v", ents)
			}
			if tc.class != nil && !dirEmpty(t, filepath.Join(store.Root(), "blobs", model.DigestAlgorithm)) {
				t.Errorf("a blob was stored from a failed download")
			}
		})
	}
}
