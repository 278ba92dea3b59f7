package s3test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestRandomReaderMatchesRandomBytes(t *testing.T) {
	want := RandomBytes(7, 1<<20+13)
	got, err := io.ReadAll(RandomReader(7, int64(len(want))))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("stream differs from RandomBytes (%v)", err)
	}
	r := RandomReader(7, int64(len(want)))
	for _, off := range []int{0, 1, 7, 8, 9, 4093, len(want) - 3} {
		b := make([]byte, 11)
		n, _ := r.ReadAt(b, int64(off))
		if !bytes.Equal(b[:n], want[off:off+n]) {
			t.Fatalf("ReadAt(%d) differs", off)
		}
	}
	if bytes.Equal(RandomBytes(1, 64), RandomBytes(2, 64)) {
		t.Fatal("seeds give the same bytes")
	}
}

func proxyClient(t *testing.T, p *Proxy) *minio.Client {
	c, err := minio.New(strings.TrimPrefix(p.URL(), "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: Region,
		BucketLookup: minio.BucketLookupPath, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func get(c *minio.Client, key string, from, to int64) ([]byte, error) {
	opts := minio.GetObjectOptions{}
	opts.SetRange(from, to)
	o, err := c.GetObject(context.Background(), "bkt", key, opts)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

func TestServerAndProxy(t *testing.T) {
	start := time.Now()
	s := Start(t)
	t.Logf("versitygw up in %s", time.Since(start))
	s.CreateBucket(t, "bkt")
	data := RandomBytes(1, 3<<20)
	s.Put(t, "bkt", "dir/a b ü.bin", data)
	s.PutReader(t, "bkt", "r", RandomReader(2, 5<<20), 5<<20)

	p := NewCountingProxy(t, s.Endpoint)
	c := proxyClient(t, p)
	got, err := get(c, "dir/a b ü.bin", 1<<20, 2<<20-1)
	if err != nil || !bytes.Equal(got, data[1<<20:2<<20]) {
		t.Fatalf("ranged GET through the proxy: %v", err)
	}
	if p.BytesSent() != 1<<20 || p.Requests() != 1 {
		t.Fatalf("sent %d bytes in %d requests", p.BytesSent(), p.Requests())
	}
	if n := p.GetCounts()["GET /bkt/dir/a b ü.bin bytes=1048576-2097151"]; n != 1 {
		t.Fatalf("counts %v", p.GetCounts())
	}

	// Injected errors are answered without reaching the server.
	p.FailNext(1, http.StatusServiceUnavailable, "SlowDown")
	if _, err := get(c, "r", 0, 99); err == nil || minio.ToErrorResponse(err).Code != "SlowDown" {
		t.Fatalf("FailNext: %v", err)
	}
	p.TruncateNext(1, 1000)
	if got, err := get(c, "r", 0, 1<<20-1); err == nil && len(got) == 1<<20 {
		t.Fatal("TruncateNext did not cut the body")
	}
	p.WaitIdle(t, 5*time.Second)
	if got, err := get(c, "r", 0, 1<<20-1); err != nil || !bytes.Equal(got, RandomBytes(2, 1<<20)) {
		t.Fatalf("only the next GET is cut: %v", err)
	}

	// Throttle: 2 MiB at 8 MiB/s takes about 250ms.
	p.SetThrottle(8 << 20)
	start = time.Now()
	if _, err := get(c, "r", 0, 2<<20-1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("throttled GET took %s", d)
	}
	p.SetThrottle(0)

	s.Remove(t, "bkt", "r")
	if _, err := get(c, "r", 0, 1); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("after Remove: %v", err)
	}
}

func TestFakeKeepsHostileKeys(t *testing.T) {
	s := StartFake(t)
	s.CreateBucket(t, "bkt")
	s.Put(t, "bkt", "m/../../etc/x", []byte("x"))
	s.Put(t, "bkt", "/abs", []byte("y"))
	obj, err := s.fake.ListBucket("bkt", nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range obj.Contents {
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, ",") != "/abs,m/../../etc/x" {
		t.Fatalf("keys %q", keys)
	}
}
