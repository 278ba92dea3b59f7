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
	m, err := f.List(context.Background(), ref, nil)
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

// A multipart upload with SHA-256 checksums on a real server downloads
// whole and right, whether or not the server gives the parts that its
// composite checksum needs (s3test.Hostile's tests check one that does).
func TestCompositeChecksumFromRealServer(t *testing.T) {
	e := newEnv(t)
	client := s3.New(s3.Options{Region: e.srv.Region, BaseEndpoint: aws.String(e.srv.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(e.srv.AccessKey, e.srv.SecretKey, "")})
	ctx := context.Background()
	data := s3test.RandomBytes(32, 11<<20+3)
	bucket, key := aws.String("models"), aws.String("multi/w.bin")
	up, err := client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: key,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
	if err != nil {
		t.Fatal(err)
	}
	var done []types.CompletedPart
	for i, r := range [][2]int{{0, 5 << 20}, {5 << 20, 10 << 20}, {10 << 20, len(data)}} {
		out, err := client.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: key, UploadId: up.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(data[r[0]:r[1]]), ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1)), ChecksumSHA256: out.ChecksumSHA256})
	}
	if _, err := client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
		t.Fatal(err)
	}
	f := e.fetcher(t)
	ref := mustRef(t, "s3://models/multi?source=test")
	m, err := f.List(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// versitygw v1.8.0 keeps the composite checksum but GetObjectAttributes
	// gives no ObjectParts, so there is nothing to check it against: the
	// download goes on unchecked (as for an object without a checksum).
	// Where parts are given they must be these.
	if c := m.Files[0].Composite; c == nil {
		t.Log("versitygw gives no parts: the composite checksum is not checked")
	} else if len(c.Parts) != 3 || c.Parts[0] != 5<<20 {
		t.Fatalf("composite checksum from versitygw: %+v", c)
	}
	full, _ := listAndFetch(t, f, ref, e.store)
	sum := sha256.Sum256(data)
	if full.Files[0].Digest != model.SHA256(sum[:]) {
		t.Fatalf("digest %s", full.Files[0].Digest)
	}
}
