package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The demo's uses of the server: a bucket, a multipart upload (s3-seed's
// 24 MiB weights), an overwrite, ranged GETs and a listing.
func TestServesWhatTheDemoNeeds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	file := filepath.Join(t.TempDir(), "endpoint")
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", file) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var endpoint string
	for deadline := time.Now().Add(10 * time.Second); endpoint == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no endpoint file after 10s")
		}
		b, _ := os.ReadFile(file)
		endpoint = strings.TrimSpace(string(b))
	}
	c, err := minio.New(strings.TrimPrefix(endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4("any", "thing", ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(ctx, "demo", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16) // 20 MiB: minio-go uploads it in parts
	put := func(key string, body []byte) {
		t.Helper()
		if _, err := c.PutObject(ctx, "demo", key, bytes.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("m/weights.bin", big)
	put("m/config.json", []byte(`{"a":1}`))
	put("m/config.json", []byte(`{"a":2}`))

	o, err := c.GetObject(ctx, "demo", "m/weights.bin", func() minio.GetObjectOptions {
		var g minio.GetObjectOptions
		if err := g.SetRange(7<<20, 7<<20+99); err != nil {
			t.Fatal(err)
		}
		return g
	}())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big[7<<20:7<<20+100]) {
		t.Errorf("ranged GET: got %d bytes, not the object's: %q want %q", len(got), got[:16], big[7<<20:7<<20+16])
	}
	var keys []string
	for info := range c.ListObjects(ctx, "demo", minio.ListObjectsOptions{Prefix: "m/", Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		keys = append(keys, info.Key)
	}
	if strings.Join(keys, ",") != "m/config.json,m/weights.bin" {
		t.Errorf("listing: %v", keys)
	}
	o, err = c.GetObject(ctx, "demo", "m/config.json", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(o); string(got) != `{"a":2}` {
		t.Errorf("after the overwrite: %q", got)
	}
}

func TestChunkedReader(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		bad              bool
	}{
		{name: "signed", body: "5;chunk-signature=ab\r\nhello\r\n6;chunk-signature=cd\r\n world\r\n0;chunk-signature=ef\r\n\r\n", want: "hello world"},
		{name: "trailer", body: "3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", want: "abc"},
		{name: "short chunk", body: "5\r\nhel", bad: true},
		{name: "no CRLF after data", body: "3\r\nabcXY0\r\n\r\n", bad: true},
		{name: "bad size", body: "zz\r\nabc\r\n", bad: true},
		{name: "huge size", body: "ffffffffff\r\nabc\r\n", bad: true},
		{name: "no end chunk", body: "3\r\nabc\r\n", bad: true},
	} {
		got, err := io.ReadAll(&chunkedReader{r: bufio.NewReader(strings.NewReader(tc.body))})
		if tc.bad {
			if err == nil {
				t.Errorf("%s: read %q, want an error", tc.name, got)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
