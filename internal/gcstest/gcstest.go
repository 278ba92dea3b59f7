// Package gcstest runs a real Google Cloud Storage JSON API server for
// integration tests: a fake-gcs-server process (Start) with its memory
// backend, seeded through its own upload API; a guard in front of it
// (Guard) that answers 401/403 as GCS's IAM would, by the service account
// a request's self-signed JWT names; and service account keys to sign
// with (ServiceAccountKey).
package gcstest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/testenv"
)

// Server is a running fake-gcs-server. Its helpers fail the test on error.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
}

// Start runs fake-gcs-server (-scheme http -backend memory) on a free
// loopback port, waits until it answers and stops it when the test ends.
// The binary is $MODELCACHE_FAKEGCS or <repo>/bin/fake-gcs-server; when it
// is missing the test is skipped, or fails if MODELCACHE_REQUIRE=1 (CI).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binaryPath(t)
	var lastErr error
	// The port is picked by binding :0 and released before the server
	// binds it, so another process may take it in between: try a few times.
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
			"-port", strconv.Itoa(port), "-public-host", addr, "-external-url", "http://"+addr, "-log-level", "warn")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("gcstest: start %s: %v", bin, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if err := waitReady("http://"+addr, exited); err != nil {
			stop()
			lastErr = fmt.Errorf("%v: %s", err, out.String())
			continue
		}
		t.Cleanup(stop)
		return &Server{Endpoint: "http://" + addr}
	}
	t.Fatalf("gcstest: fake-gcs-server did not start: %v", lastErr)
	return nil
}

func waitReady(endpoint string, exited <-chan struct{}) error {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("exited at start")
		default:
		}
		if resp, err := c.Get(endpoint + "/_internal/healthcheck"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("no answer on %s within 30s", endpoint)
}

func binaryPath(t testing.TB) string {
	return testenv.Tool(t, "MODELCACHE_FAKEGCS", "bin/fake-gcs-server", "the GCS server: run `make tools` (installs fake-gcs-server into ./bin)")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	s.call(t, http.MethodPost, s.Endpoint+"/storage/v1/b", "application/json", body, nil)
}

// Put uploads data as object name (a new generation if it exists) and
// returns the generation.
func (s *Server) Put(t testing.TB, bucket, name string, data []byte) int64 {
	t.Helper()
	return s.PutEncoded(t, bucket, name, data, "")
}

// PutEncoded uploads data as object name with a Content-Encoding (such as
// gzip, which GCS then serves decompressed) and returns the generation.
func (s *Server) PutEncoded(t testing.TB, bucket, name string, data []byte, encoding string) int64 {
	t.Helper()
	q := url.Values{"uploadType": {"media"}, "name": {name}}
	if encoding != "" {
		q.Set("contentEncoding", encoding)
	}
	u := s.Endpoint + "/upload/storage/v1/b/" + url.PathEscape(bucket) + "/o?" + q.Encode()
	var o struct {
		Generation string `json:"generation"`
	}
	s.call(t, http.MethodPost, u, "application/octet-stream", data, &o)
	g, err := strconv.ParseInt(o.Generation, 10, 64)
	if err != nil {
		t.Fatalf("gcstest: upload %s/%s: generation %q", bucket, name, o.Generation)
	}
	return g
}

// Delete removes object name.
func (s *Server) Delete(t testing.TB, bucket, name string) {
	t.Helper()
	s.call(t, http.MethodDelete, s.Endpoint+"/storage/v1/b/"+url.PathEscape(bucket)+"/o/"+url.PathEscape(name), "", nil, nil)
}

func (s *Server) call(t testing.TB, method, u, ctype string, body []byte, out any) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("gcstest: %s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("gcstest: %s %s: %s: %s", method, u, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("gcstest: %s %s: %v: %s", method, u, err, b)
		}
	}
}

// Guard is a proxy in front of a server that answers as GCS's IAM would:
// a request without a bearer token is 401, one whose token's service
// account (the iss of a self-signed JWT; the signature is not checked) may
// not read the bucket is 403. Everything else is passed on.
type Guard struct {
	URL string

	mu      sync.Mutex
	readers map[string][]string // bucket -> service account emails
	seen    []string            // the emails of the requests, in order
}

// NewGuard starts a guard in front of upstream; it closes when the test ends.
func NewGuard(t testing.TB, upstream string) *Guard {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{readers: map[string][]string{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		email, ok := tokenEmail(r.Header.Get("Authorization"))
		g.mu.Lock()
		g.seen = append(g.seen, email)
		allowed := false
		for _, e := range g.readers[bucketOf(r.URL.EscapedPath())] {
			allowed = allowed || e == email
		}
		g.mu.Unlock()
		switch {
		case !ok:
			writeError(w, http.StatusUnauthorized, "Anonymous caller does not have storage.objects.list access.")
		case !allowed:
			writeError(w, http.StatusForbidden, email+" does not have storage.objects.get access to the Google Cloud Storage object.")
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// Allow lets the service account email read bucket.
func (g *Guard) Allow(bucket, email string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.readers[bucket] = append(g.readers[bucket], email)
}

// Seen is the service account of every request so far ("" for none).
func (g *Guard) Seen() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.seen...)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"errors":[{"reason":"forbidden","message":%q}]}}`, code, msg, msg)
}

// bucketOf reads the bucket from a JSON API path (/storage/v1/b/B/o…).
func bucketOf(p string) string {
	rest, ok := strings.CutPrefix(p, "/storage/v1/b/")
	if !ok {
		return ""
	}
	b, _, _ := strings.Cut(rest, "/")
	b, _ = url.PathUnescape(b)
	return b
}

// tokenEmail reads the iss claim of a bearer JWT.
func tokenEmail(auth string) (string, bool) {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return "", false
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Iss == "" {
		return "", false
	}
	return claims.Iss, true
}

// ServiceAccountKey is a new service account JSON key for email, as
// `gcloud iam service-accounts keys create` writes one (a fresh RSA key).
// Its token_uri points at a closed port: nothing may ask it for a token.
func ServiceAccountKey(t testing.TB, email string) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "test",
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      "1",
		"token_uri":      "http://127.0.0.1:1/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
