package az_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/az"
)

// A listing page is whatever the server sends: the listing either fails
// classed, or every file it names is a clean path inside the model with a
// sane size and an ETag.
func FuzzListPage(f *testing.F) {
	f.Add(pageXML("", blobXML("m/config.json", 3, "0x1"), blobXML("m/dir/", 0, "0x2"), blobXML("m/w", 9, "0x3")))
	f.Add(pageXML("", blobXML("m/../x", 3, "0x1")))
	f.Add(pageXML("", `<Blob><Name Encoded="true">m%2Fa</Name><Properties><Content-Length>1</Content-Length><Etag>e</Etag></Properties></Blob>`))
	f.Add(pageXML("", `<Blob><Name>m/d</Name><Metadata><hdi_isfolder>true</hdi_isfolder></Metadata><Properties><Content-Length>0</Content-Length><Etag>e</Etag></Properties></Blob>`))
	f.Fuzz(func(t *testing.T, page string) {
		l := &liar{page: func(marker string) string {
			if marker != "" {
				return pageXML("")
			}
			return page
		}}
		// In memory, no sockets: the handler answers through the client's
		// transport.
		hc := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			w := httptest.NewRecorder()
			l.ServeHTTP(w, r)
			return w.Result(), nil
		})}
		c, err := az.New(az.Options{Account: "acct", Endpoint: "http://blobs.test", HTTPClient: hc, MaxPages: 3, MaxFiles: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Model("c", "m").List(context.Background())
		if err != nil {
			var se *source.Error
			if !errors.As(err, &se) || se.Class == nil {
				t.Fatalf("unclassed error: %v", err)
			}
			return
		}
		for _, fl := range got.Files {
			rel, skip, err := model.RelPath("", fl.Path)
			if err != nil || skip || rel != fl.Path || fl.Size < 0 || fl.Size > model.MaxFileSize || fl.ETag == "" || strings.Contains(fl.ETag, `"`) {
				t.Fatalf("listed %+v", fl)
			}
		}
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
