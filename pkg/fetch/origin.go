package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// origin is where a run reads a model's bytes: an S3 bucket (s3Origin) or
// a source.Source (srcOrigin: a Hub repo at a commit). Parts, retries,
// resume, hashing, dedup and commits are the run's, the same for both.
type origin interface {
	retrier
	// key is the name of the file at path at the origin.
	key(path string) string
	// ingestOrigin names the file in ingest keys, so a later run resumes
	// only bytes of the same file from the same place.
	ingestOrigin(key string) string
	// open reads bytes [off, end) of f, whose name is key.
	open(ctx context.Context, key string, f model.File, off, end int64) (io.ReadCloser, error)
}

// retrier is what retry needs to know of where a request went.
type retrier interface {
	classify(err error) kind
	// failure is the error to return for err after attempts tries.
	failure(err error, key string, attempts int) error
	// errorf is an error of class about key.
	errorf(class error, key, msg string, err error) error
	where(key string) string
}

// s3Origin is one bucket through one client.
type s3Origin struct {
	t              *target
	bucket, prefix string
}

func (o s3Origin) key(path string) string         { return objectKey(o.prefix, path) }
func (o s3Origin) ingestOrigin(key string) string { return o.t.endpoint + "/" + o.bucket + "/" + key }
func (o s3Origin) where(key string) string        { return "s3://" + o.bucket + "/" + key }
func (o s3Origin) classify(err error) kind        { return classify(err) }
func (o s3Origin) failure(err error, key string, attempts int) error {
	return o.t.fail(err, o.bucket, key, attempts)
}
func (o s3Origin) errorf(class error, key, msg string, err error) error {
	return &Error{Class: class, Bucket: o.bucket, Key: key, Msg: msg, Err: err}
}

// open GETs the range with If-Match on the listed ETag, so a changed object
// fails instead of mixing two versions in a file.
func (o s3Origin) open(ctx context.Context, key string, f model.File, off, end int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1))}
	if f.ETag != "" {
		in.IfMatch = aws.String(`"` + f.ETag + `"`)
	}
	out, err := o.t.client.GetObject(ctx, in)
	if err != nil {
		return nil, err
	}
	if err := checkResponse(out, off, end, f); err != nil {
		out.Body.Close()
		return nil, err
	}
	return out.Body, nil
}

// srcOrigin is a model of a source.Source, named for messages by base
// ("hf://org/model@<commit>") and for ingests by ingestBase.
type srcOrigin struct {
	src              source.Source
	base, ingestBase string
}

func (o srcOrigin) key(path string) string         { return path }
func (o srcOrigin) ingestOrigin(key string) string { return o.ingestBase + "/" + key }
func (o srcOrigin) where(key string) string        { return o.base + "/" + key }
func (o srcOrigin) open(ctx context.Context, _ string, f model.File, off, end int64) (io.ReadCloser, error) {
	return o.src.Open(ctx, f, off, end)
}

// classify: a source says what its errors are; anything else is the
// network's (a body cut short, a reset), classified as for S3.
func (o srcOrigin) classify(err error) kind {
	var se *source.Error
	if errors.As(err, &se) {
		return kind{class: se.Class, retry: se.Temporary, what: se.Msg}
	}
	return classify(err)
}

func (o srcOrigin) failure(err error, key string, attempts int) error {
	var se *source.Error
	if !errors.As(err, &se) {
		k := classify(err)
		what := strings.ReplaceAll(k.what, "%s", "the server")
		se = &source.Error{Class: k.class, Temporary: k.retry, Where: o.where(key), Op: "read", Msg: what, Err: err}
	}
	if attempts > 1 && se.Temporary {
		c := *se
		c.Msg += fmt.Sprintf(" (after %d attempts)", attempts)
		se = &c
	}
	return se
}

func (o srcOrigin) errorf(class error, key, msg string, err error) error {
	return &source.Error{Class: class, Where: o.where(key), Op: "fetch", Msg: msg, Err: err}
}
