package fetch_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// A listing is whatever the server sends. For any ListObjectsV2 answer (the
// fuzzed body, served for every page), List either fails with an error or
// returns a manifest that validates: paths inside the model, sizes in
// range, no duplicates. It never panics and never lists past its limits.
func FuzzListObjects(f *testing.F) {
	const head = `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Prefix>m/</Prefix>`
	for _, body := range []string{
		head + `<KeyCount>1</KeyCount><IsTruncated>false</IsTruncated><Contents><Key>m/a</Key><ETag>"e"</ETag><Size>3</Size></Contents></ListBucketResult>`,
		head + `<IsTruncated>false</IsTruncated><Contents><Key>m/../../etc/passwd</Key><Size>3</Size></Contents></ListBucketResult>`,
		head + `<IsTruncated>false</IsTruncated><Contents><Key>m/huge</Key><Size>9223372036854775807</Size></Contents><Contents><Key>m/b</Key><Size>1</Size></Contents></ListBucketResult>`,
		head + `<IsTruncated>true</IsTruncated><NextContinuationToken>t</NextContinuationToken><Contents><Key>m/a</Key><Size>1</Size></Contents></ListBucketResult>`,
		head + `<IsTruncated>false</IsTruncated><Contents><Key>m/a</Key><Size>-1</Size></Contents><Contents><Key>m/a</Key><Size>1</Size></Contents></ListBucketResult>`,
		head + `<IsTruncated>false</IsTruncated><Contents><Key>m/a</Key><Size>1</Size></Contents><Contents><Key>m/a/b</Key><Size>1</Size></Contents></ListBucketResult>`,
		`<Error><Code>AccessDenied</Code></Error>`, ``, `<`,
	} {
		f.Add(body)
	}
	var body atomic.Value
	var pages atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pages.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.Write([]byte(body.Load().(string)))
	}))
	f.Cleanup(srv.Close)
	fetcher, err := fetch.New(nil, fetch.WithAllowedEndpoints([]string{srv.URL}), fetch.WithMaxAttempts(1),
		fetch.WithListLimits(50, 5, 5*time.Second))
	if err != nil {
		f.Fatal(err)
	}
	ref := model.Ref{Bucket: "bkt", Prefix: "m", Endpoint: srv.URL}
	f.Fuzz(func(t *testing.T, b string) {
		body.Store(b)
		pages.Store(0)
		m, err := fetcher.List(context.Background(), ref, nil)
		if n := pages.Load(); n > 5 {
			t.Fatalf("%d pages read, limit 5", n)
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a listing answered at once timed out: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("List returned a manifest that does not validate: %v", err)
		}
		if len(m.Files) == 0 || len(m.Files) > 50 {
			t.Fatalf("%d files, want 1..50", len(m.Files))
		}
		for _, fl := range m.Files {
			if strings.HasPrefix(fl.Path, "/") || strings.Contains("/"+fl.Path+"/", "/../") || fl.Size < 0 || fl.Size > model.MaxFileSize {
				t.Fatalf("unsafe file %+v", fl)
			}
		}
	})
}
