package s3test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// StartWithIAM is Start with versitygw's internal IAM and admin API on, so a
// test can create accounts (CreateUser) besides the root one. A plain user
// can read only the buckets it owns.
func StartWithIAM(t testing.TB) *Server {
	t.Helper()
	bin := binaryPath(t)
	dir := t.TempDir()
	data, iam := filepath.Join(dir, "s3"), filepath.Join(dir, "iam")
	for _, d := range []string{data, iam} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		adminPort, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr, admin := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", adminPort)
		p, err := startProcess(bin, addr, data, "--iam-dir", iam, "--admin-port", admin)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		s := &Server{Endpoint: "http://" + addr, AccessKey: AccessKey, SecretKey: SecretKey, Region: Region,
			adminEndpoint: "http://" + admin, bin: bin}
		s.Client, err = minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""),
			Region: Region, BucketLookup: minio.BucketLookupPath})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("s3test: versitygw with IAM did not start: %v", lastErr)
	return nil
}

// CreateUser adds an account with the "user" role.
func (s *Server) CreateUser(t testing.TB, access, secret string) {
	t.Helper()
	s.admin(t, "create-user", "--access", access, "--secret", secret, "--role", "user")
}

// ChangeBucketOwner gives bucket to the account access (which can then read it).
func (s *Server) ChangeBucketOwner(t testing.TB, bucket, access string) {
	t.Helper()
	s.admin(t, "change-bucket-owner", "--bucket", bucket, "--owner", access)
}

func (s *Server) admin(t testing.TB, args ...string) {
	t.Helper()
	if s.adminEndpoint == "" {
		t.Fatal("s3test: the server has no admin API; start it with StartWithIAM")
	}
	cmd := exec.Command(s.bin, append([]string{"admin", "--access", s.AccessKey, "--secret", s.SecretKey,
		"--endpoint-url", s.adminEndpoint}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("s3test: versitygw admin %s: %v: %s", args[0], err, out)
	}
}
