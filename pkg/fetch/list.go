package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/modelcache/modelcache/pkg/model"
)

// List reads every object under ref.Prefix/ into a manifest (without
// digests). Directory markers are skipped. A key that would land outside the
// model directory fails the whole listing, naming the key: a model with a
// hostile file is refused, not partly fetched. An empty or missing prefix is
// ErrNotFound. A listing that passes the fetcher's limits (files, pages,
// time: WithListLimits) fails with ErrLimit, so a server that never stops
// listing costs a bounded amount of memory and time.
func (f *Fetcher) List(ctx context.Context, ref model.Ref) (*model.Manifest, error) {
	t, err := f.target(ctx, ref)
	if err != nil {
		return nil, err
	}
	files, sums, err := f.list(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	if err := f.sourceDigests(ctx, t, ref, files, sums); err != nil {
		return nil, err
	}
	m, err := model.NewManifest(ref, files)
	if err != nil {
		return nil, fmt.Errorf("fetch s3://%s/%s: %w", ref.Bucket, ref.Prefix, err)
	}
	return m, nil
}

var errListTimeout = errors.New("fetch: listing timed out")

// list returns the model's files and, for each, whether the listing says
// the object carries a SHA-256 checksum.
func (f *Fetcher) list(ctx context.Context, t *target, ref model.Ref) ([]model.File, []bool, error) {
	prefix := ref.Prefix
	if prefix != "" {
		prefix += "/"
	}
	limit := func(format string, a ...any) error {
		return &Error{Class: ErrLimit, Bucket: ref.Bucket, Key: ref.Prefix, Msg: fmt.Sprintf(format, a...)}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, f.listTimeout, errListTimeout)
	defer cancel()
	var files []model.File
	var sums []bool
	var token *string
	for pages := 0; ; pages++ {
		if pages == f.maxPages {
			return nil, nil, limit("the listing at %s passed %d pages (--max-list-pages) with %d files and goes on", t.endpoint, f.maxPages, len(files))
		}
		var out *s3.ListObjectsV2Output
		err := f.retry(ctx, t, ref.Bucket, ref.Prefix, func() error {
			var err error
			out, err = t.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
				Bucket: aws.String(ref.Bucket), Prefix: aws.String(prefix), ContinuationToken: token})
			return err
		}, nil, nil)
		if err != nil && errors.Is(context.Cause(ctx), errListTimeout) {
			return nil, nil, limit("the listing at %s took longer than %s (--list-timeout) after %d pages and %d files", t.endpoint, f.listTimeout, pages, len(files))
		}
		if err != nil {
			return nil, nil, err
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			rel, skip, err := model.RelPath(ref.Prefix, key)
			if err != nil {
				return nil, nil, fmt.Errorf("fetch s3://%s/%s: refusing the model: %w", ref.Bucket, ref.Prefix, err)
			}
			if skip {
				continue
			}
			if len(files) == f.maxFiles {
				return nil, nil, limit("the model at %s has more than %d files (--max-files)", t.endpoint, f.maxFiles)
			}
			files = append(files, model.File{Path: rel, Size: aws.ToInt64(o.Size), ETag: strings.Trim(aws.ToString(o.ETag), `"`)})
			sums = append(sums, slices.Contains(o.ChecksumAlgorithm, types.ChecksumAlgorithmSha256))
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		if out.NextContinuationToken == nil || aws.ToString(out.NextContinuationToken) == aws.ToString(token) {
			// A server that says "more" without a new token would loop forever.
			return nil, nil, fmt.Errorf("fetch s3://%s/%s: listing at %s is truncated but gives no continuation token", ref.Bucket, ref.Prefix, t.endpoint)
		}
		token = out.NextContinuationToken
	}
	if len(files) == 0 {
		return nil, nil, &Error{Class: ErrNotFound, Bucket: ref.Bucket, Key: ref.Prefix,
			Msg: fmt.Sprintf("prefix %q is empty or missing in bucket %q at %s", ref.Prefix, ref.Bucket, t.endpoint)}
	}
	return files, sums, nil
}

// sourceDigests asks for the SHA-256 of every object the listing says was
// uploaded with one (a HEAD with checksum mode on), and puts it in the
// file's Digest: the download must then give those bytes, or it fails as
// corrupt and nothing is stored. Only a full-object checksum is the SHA-256
// of the bytes; a multipart upload's composite one ("…-N") is a hash of its
// parts' and is not checked. The source's digest is never used to skip a
// download: only bytes this node downloaded and hashed prove a digest.
func (f *Fetcher) sourceDigests(ctx context.Context, t *target, ref model.Ref, files []model.File, sums []bool) error {
	var idx []int
	for i, ok := range sums {
		if ok {
			idx = append(idx, i)
		}
	}
	return each(ctx, accessHeads, len(idx), func(ctx context.Context, k int) error {
		fl := &files[idx[k]]
		key := objectKey(ref, fl.Path)
		var out *s3.HeadObjectOutput
		err := f.retry(ctx, t, ref.Bucket, key, func() error {
			var err error
			out, err = t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(key),
				ChecksumMode: types.ChecksumModeEnabled})
			return err
		}, nil, nil)
		if err != nil {
			return err
		}
		sum := aws.ToString(out.ChecksumSHA256)
		if sum == "" || out.ChecksumType == types.ChecksumTypeComposite || strings.Contains(sum, "-") {
			return nil
		}
		b, err := base64.StdEncoding.DecodeString(sum)
		if err != nil || len(b) != sha256.Size {
			return &Error{Class: ErrChanged, Bucket: ref.Bucket, Key: key,
				Msg: fmt.Sprintf("the server sent x-amz-checksum-sha256 %q, which is not a base64 SHA-256", sum)}
		}
		fl.Digest = model.SHA256(b)
		return nil
	})
}
