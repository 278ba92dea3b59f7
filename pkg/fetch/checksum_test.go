package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/model"
)

// A real server (versitygw) keeps the SHA-256 of an object uploaded with
// one; the listing says so, List takes it as the file's digest, and the
// fetch is checked against it. An object uploaded without one is fetched
// as before.
func TestSourceChecksumFromRealServer(t *testing.T) {
	e := newEnv(t)
	client := s3.New(s3.Options{Region: e.srv.Region, BaseEndpoint: aws.String(e.srv.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(e.srv.AccessKey, e.srv.SecretKey, "")})
	with := s3test.RandomBytes(31, 3<<20+1)
	_, err := client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("models"), Key: aws.String("sum/with.bin"),
		Body: bytes.NewReader(with), ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Put(t, "models", "sum/without.bin", []byte("no checksum"))

	f := e.fetcher(t)
	ref := mustRef(t, "s3://models/sum?source=test")
	m, err := f.List(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(with)
	for _, fl := range m.Files {
		switch fl.Path {
		case "with.bin":
			if fl.Digest != model.SHA256(sum[:]) {
				t.Fatalf("with.bin: digest from the listing %q, want the uploaded SHA-256", fl.Digest)
			}
		case "without.bin":
			if fl.Digest != "" {
				t.Fatalf("without.bin: digest %q without a checksum", fl.Digest)
			}
		}
	}
	full, _ := listAndFetch(t, f, ref, e.store)
	for _, fl := range full.Files {
		if fl.Path == "with.bin" && fl.Digest != model.SHA256(sum[:]) {
			t.Fatalf("fetched digest %s", fl.Digest)
		}
	}
}
