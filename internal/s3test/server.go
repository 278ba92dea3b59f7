// Package s3test runs real S3 servers for integration tests: a versitygw
// process (Start), a counting, throttling, fault-injecting proxy in front of
// it (NewCountingProxy; NewFaults breaks object GETs at random, seeded),
// an in-process gofakes3 for object keys a real server refuses to store
// (StartFake), and an in-process lying server for security tests
// (StartHostile). It also generates deterministic test content
// (RandomBytes, RandomReader).
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/modelcache/modelcache/internal/testenv"
)

// Credentials and region every server started here uses.
const (
	AccessKey = "testkey"
	SecretKey = "testsecret"
	Region    = "us-east-1"
)

// Server is a running S3 server. Its helpers fail the test on error.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	// Client talks to the server directly (path-style). Nil for a fake server:
	// use the helpers, which write keys verbatim into its backend.
	Client *minio.Client

	fake gofakes3.Backend // set by StartFake

	adminEndpoint, bin string // set by StartWithIAM
}

// Start runs a versitygw process on a free loopback port with a fresh posix
// root under t.TempDir(), waits until it answers and stops it when the test
// ends. The binary is $MODELCACHE_VERSITYGW or <repo>/bin/versitygw; when it
// is missing the test is skipped, or fails if MODELCACHE_REQUIRE=1 (CI).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binaryPath(t)
	data := filepath.Join(t.TempDir(), "s3")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	// The port is picked by binding :0 and released before versitygw binds
	// it, so another process may take it in between: try a few times.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p, err := startProcess(bin, addr, data)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		s := &Server{Endpoint: "http://" + addr, AccessKey: AccessKey, SecretKey: SecretKey, Region: Region}
		s.Client, err = minio.New(addr, &minio.Options{
			Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
			Region:       Region,
			BucketLookup: minio.BucketLookupPath,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("s3test: versitygw did not start: %v", lastErr)
	return nil
}

func binaryPath(t testing.TB) string {
	return testenv.Tool(t, "MODELCACHE_VERSITYGW", "bin/versitygw", "the S3 server: run `make tools` (installs versitygw into ./bin)")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// startProcess runs versitygw on addr over the posix root data; extra are
// global flags (e.g. the IAM directory and admin port). Connections are
// kept alive, as by any production S3 (versitygw closes each by default).
func startProcess(bin, addr, data string, extra ...string) (*process, error) {
	args := append([]string{"--access", AccessKey, "--secret", SecretKey, "--port", addr,
		"--region", Region, "--quiet", "--keep-alive"}, extra...)
	cmd := exec.Command(bin, append(args, "posix", data)...)
	// The sandbox's AWS_CA_BUNDLE (and any ROOT_*/VGW_* settings) must not
	// change how the server runs.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "AWS_CA_BUNDLE" || strings.HasPrefix(k, "ROOT_") || strings.HasPrefix(k, "VGW_") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// If the test binary is killed (a timeout, ^C) the server goes with it
	// instead of lingering on its port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { cmd.Wait(); close(p.exited) }()
	// Ready when it answers HTTP at all (an anonymous request gets 403).
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("versitygw exited at start: %s", out.String())
		default:
		}
		if resp, err := c.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return p, nil
		}
	}
	p.stop()
	return nil, fmt.Errorf("versitygw did not answer on %s within 30s: %s", addr, out.String())
}

// stop sends SIGTERM, then SIGKILL if the server has not exited in 5s.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 { // keep memory bounded if the server is chatty
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	var err error
	if s.fake != nil {
		err = s.fake.CreateBucket(name)
	} else {
		err = s.Client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{Region: s.Region})
	}
	if err != nil {
		t.Fatalf("s3test: create bucket %q: %v", name, err)
	}
}

// Put stores data under bucket/key.
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	s.PutReader(t, bucket, key, bytes.NewReader(data), int64(len(data)))
}

// PutReader stores size bytes of r under bucket/key. Objects up to 1 GiB are
// sent in one PUT, like most model uploads; bigger ones as multipart uploads.
func (s *Server) PutReader(t testing.TB, bucket, key string, r io.Reader, size int64) {
	t.Helper()
	var err error
	if s.fake != nil {
		_, err = s.fake.PutObject(bucket, key, nil, r, size, nil)
	} else {
		_, err = s.Client.PutObject(context.Background(), bucket, key, r, size, minio.PutObjectOptions{
			DisableMultipart: size <= 1<<30, PartSize: 256 << 20,
			ContentType: "application/octet-stream"})
	}
	if err != nil {
		t.Fatalf("s3test: put %s/%s: %v", bucket, key, err)
	}
}

// Remove deletes bucket/key.
func (s *Server) Remove(t testing.TB, bucket, key string) {
	t.Helper()
	var err error
	if s.fake != nil {
		_, err = s.fake.DeleteObject(bucket, key)
	} else {
		err = s.Client.RemoveObject(context.Background(), bucket, key, minio.RemoveObjectOptions{})
	}
	if err != nil {
		t.Fatalf("s3test: remove %s/%s: %v", bucket, key, err)
	}
}
