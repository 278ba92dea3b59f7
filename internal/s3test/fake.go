package s3test

import (
	"net/http/httptest"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// StartFake runs gofakes3 with its memory backend on a loopback httptest
// server. Unlike versitygw (whose posix backend normalizes "a/../b" and
// refuses keys ending in ".."), it stores and lists keys verbatim, so it is
// the server for tests of hostile keys such as "m/../../etc/x" or "/abs".
// It does not check signatures; use Start for anything about credentials.
func StartFake(t testing.TB) *Server {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	ts := httptest.NewServer(faker.Server())
	t.Cleanup(ts.Close)
	return &Server{Endpoint: ts.URL, AccessKey: AccessKey, SecretKey: SecretKey, Region: Region, fake: backend}
}
