package s3test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// hostileClient is configured as pkg/fetch configures its clients.
func hostileClient(h *Hostile, akid, token string) *s3.Client {
	return s3.New(s3.Options{
		Credentials:                credentials.NewStaticCredentialsProvider(akid, "any secret", token),
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(h.Endpoint),
		UsePathStyle:               true,
		Retryer:                    aws.NopRetryer{},
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
}

// listAll follows continuation tokens, as a fetcher does.
func listAll(t *testing.T, c *s3.Client, bucket, prefix string) []types.Object {
	t.Helper()
	var objs []types.Object
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if int(aws.ToInt32(out.KeyCount)) != len(out.Contents) {
			t.Fatalf("KeyCount %d for %d keys", aws.ToInt32(out.KeyCount), len(out.Contents))
		}
		objs = append(objs, out.Contents...)
	}
	return objs
}

func getRange(c *s3.Client, bucket, key, rng, ifMatch string) (*s3.GetObjectOutput, []byte, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	if ifMatch != "" {
		in.IfMatch = aws.String(ifMatch)
	}
	out, err := c.GetObject(context.Background(), in)
	if err != nil {
		return nil, nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return out, b, err
}

// errorIs checks an SDK error's S3 code and HTTP status.
func errorIs(t *testing.T, err error, code string, status int) {
	t.Helper()
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("got %v, want %s (%d)", err, code, status)
	}
}

func TestHostileHonest(t *testing.T) {
	h := StartHostile(t)
	h.PageSize(2)
	data := RandomBytes(1, 1000)
	for i := range 5 {
		h.Put("bkt", fmt.Sprintf("m/f%d", i), data[:100*i])
	}
	h.Put("bkt", "other", []byte("x"))
	c := hostileClient(h, AccessKey, "")
	ctx := context.Background()

	objs := listAll(t, c, "bkt", "m/")
	if len(objs) != 5 || h.Pages() != 3 {
		t.Fatalf("%d keys in %d pages", len(objs), h.Pages())
	}
	for i, o := range objs {
		if aws.ToString(o.Key) != fmt.Sprintf("m/f%d", i) || aws.ToInt64(o.Size) != int64(100*i) ||
			aws.ToString(o.ETag) != `"`+md5hex(data[:100*i])+`"` || o.LastModified == nil {
			t.Fatalf("entry %d: %s %d %s", i, aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToString(o.ETag))
		}
	}
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt"), MaxKeys: aws.Int32(1)})
	if err != nil || len(out.Contents) != 1 || !aws.ToBool(out.IsTruncated) {
		t.Fatalf("max-keys 1: %v", err)
	}

	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("m/f3")})
	if err != nil || aws.ToInt64(head.ContentLength) != 300 || aws.ToString(head.ETag) != `"`+md5hex(data[:300])+`"` {
		t.Fatalf("HEAD: %v", err)
	}
	etag := aws.ToString(head.ETag)
	got, b, err := getRange(c, "bkt", "m/f3", "bytes=10-19", etag)
	if err != nil || !bytes.Equal(b, data[10:20]) || aws.ToString(got.ContentRange) != "bytes 10-19/300" {
		t.Fatalf("ranged GET: %v", err)
	}
	if _, b, err = getRange(c, "bkt", "m/f3", "bytes=-5", ""); err != nil || !bytes.Equal(b, data[295:300]) {
		t.Fatalf("suffix GET: %v", err)
	}
	if _, b, err = getRange(c, "bkt", "m/f3", "", ""); err != nil || !bytes.Equal(b, data[:300]) {
		t.Fatalf("whole GET: %v", err)
	}

	_, _, err = getRange(c, "bkt", "m/f3", "bytes=0-9", `"`+md5hex(nil)+`"`)
	errorIs(t, err, "PreconditionFailed", http.StatusPreconditionFailed)
	_, _, err = getRange(c, "bkt", "m/f3", "bytes=300-", "")
	errorIs(t, err, "InvalidRange", http.StatusRequestedRangeNotSatisfiable)
	_, _, err = getRange(c, "bkt", "m/nope", "", "")
	var nsk *types.NoSuchKey
	if !errors.As(err, &nsk) {
		t.Fatalf("missing key: %v", err)
	}
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("m/nope")})
	errorIs(t, err, "NotFound", http.StatusNotFound)
	_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("nobkt")})
	errorIs(t, err, "NoSuchBucket", http.StatusNotFound)
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k"), Body: strings.NewReader("x")})
	errorIs(t, err, "NotImplemented", http.StatusNotImplemented)
	_, err = c.GetObjectAcl(ctx, &s3.GetObjectAclInput{Bucket: aws.String("bkt"), Key: aws.String("m/f1")})
	errorIs(t, err, "NotImplemented", http.StatusNotImplemented)
}

func TestHostileLies(t *testing.T) {
	h := StartHostile(t)
	h.Lie("bkt", "huge", Listing{ETag: "cafe", Size: math.MaxInt64, Body: []byte("short body")})
	h.Lie("bkt", "negative", Listing{ETag: "beef", Size: -7, Body: []byte("abc")})
	h.Lie("bkt", "changed", Listing{ETag: "old", Size: 3, Body: []byte("new"), ServedETag: "new"})
	h.Lie("bkt", "../../etc/passwd", Listing{ETag: "e", Size: 1, Body: []byte("x"), HeadSize: 99, RangeTotal: 1})
	c := hostileClient(h, AccessKey, "")
	ctx := context.Background()

	want := map[string]int64{"huge": math.MaxInt64, "negative": -7, "changed": 3, "../../etc/passwd": 1}
	for _, o := range listAll(t, c, "bkt", "") {
		if k := aws.ToString(o.Key); aws.ToInt64(o.Size) != want[k] {
			t.Fatalf("%s listed as %d bytes, want %d", k, aws.ToInt64(o.Size), want[k])
		}
		delete(want, aws.ToString(o.Key))
	}
	if len(want) != 0 {
		t.Fatalf("not listed: %v", want)
	}

	// The lie is consistent: HEAD and GET repeat the listed size and ETag,
	// only the bytes differ.
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("huge")})
	if err != nil || aws.ToInt64(head.ContentLength) != math.MaxInt64 || aws.ToString(head.ETag) != `"cafe"` {
		t.Fatalf("HEAD huge: %v %d", err, aws.ToInt64(head.ContentLength))
	}
	got, b, err := getRange(c, "bkt", "huge", "bytes=0-1000", `"cafe"`)
	if err != nil || string(b) != "short body" || aws.ToString(got.ContentRange) != "bytes 0-9/9223372036854775807" {
		t.Fatalf("GET huge: %v %q %s", err, b, aws.ToString(got.ContentRange))
	}
	if got, b, err = getRange(c, "bkt", "negative", "bytes=1-", ""); err != nil || string(b) != "bc" ||
		aws.ToString(got.ContentRange) != "bytes 1-2/-7" {
		t.Fatalf("GET negative: %v", err)
	}

	// Changed since listed: If-Match on the listed ETag fails.
	_, _, err = getRange(c, "bkt", "changed", "bytes=0-2", `"old"`)
	errorIs(t, err, "PreconditionFailed", http.StatusPreconditionFailed)
	if got, _, err = getRange(c, "bkt", "changed", "", ""); err != nil || aws.ToString(got.ETag) != `"new"` {
		t.Fatalf("GET changed: %v", err)
	}

	// Keys are kept verbatim, and HeadSize and RangeTotal are their own lies.
	head, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("../../etc/passwd")})
	if err != nil || aws.ToInt64(head.ContentLength) != 99 {
		t.Fatalf("HEAD ../../etc/passwd: %v", err)
	}
	if got, _, err = getRange(c, "bkt", "../../etc/passwd", "bytes=0-0", ""); err != nil || aws.ToString(got.ContentRange) != "bytes 0-0/1" {
		t.Fatalf("GET ../../etc/passwd: %v", err)
	}
}

func TestHostileEndlessPages(t *testing.T) {
	h := StartHostile(t)
	h.EndlessPages("bkt")
	h.PageSize(3)
	c := hostileClient(h, AccessKey, "")
	tokens, keys := map[string]bool{}, map[string]bool{}
	var token *string
	for range 50 {
		out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
			Bucket: aws.String("bkt"), Prefix: aws.String("m/"), ContinuationToken: token})
		if err != nil {
			t.Fatal(err)
		}
		next := aws.ToString(out.NextContinuationToken)
		if !aws.ToBool(out.IsTruncated) || next == "" || tokens[next] || len(out.Contents) != 3 {
			t.Fatalf("page %d: truncated %v, token %q (seen %v), %d keys", len(tokens), aws.ToBool(out.IsTruncated),
				next, tokens[next], len(out.Contents))
		}
		tokens[next] = true
		for _, o := range out.Contents {
			k := aws.ToString(o.Key)
			if keys[k] || !strings.HasPrefix(k, "m/") {
				t.Fatalf("key %q again or outside the prefix", k)
			}
			keys[k] = true
		}
		token = out.NextContinuationToken
	}
	if h.Pages() != 50 {
		t.Fatalf("Pages() = %d", h.Pages())
	}
	// Listed keys can be fetched: empty objects.
	for k := range keys {
		if _, b, err := getRange(c, "bkt", k, "", `"`+md5hex(nil)+`"`); err != nil || len(b) != 0 {
			t.Fatalf("GET %s: %v", k, err)
		}
		break
	}
}

func TestHostileSeenRecordsIdentity(t *testing.T) {
	h := StartHostile(t)
	h.Put("victim", "m/w", []byte("weights"))
	ctx := context.Background()
	if _, _, err := getRange(hostileClient(h, "ASIAVICTIM", "victim-session"), "victim", "m/w", "bytes=0-3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := hostileClient(h, "AKIAATTACKER", "").HeadObject(ctx,
		&s3.HeadObjectInput{Bucket: aws.String("victim"), Key: aws.String("m/w")}); err != nil {
		t.Fatal(err)
	}
	// Unsigned requests are recorded too, with no identity.
	resp, err := http.Get(h.Endpoint + "/victim?location")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	want := []Request{
		{Method: "GET", Bucket: "victim", Key: "m/w", AccessKeyID: "ASIAVICTIM", SessionToken: "victim-session", Range: "bytes=0-3"},
		{Method: "HEAD", Bucket: "victim", Key: "m/w", AccessKeyID: "AKIAATTACKER"},
		{Method: "GET", Bucket: "victim"},
	}
	if got := h.Seen(); !slices.Equal(got, want) || resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("Seen:\n%+v\nwant\n%+v (status %d)", got, want, resp.StatusCode)
	}
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}
