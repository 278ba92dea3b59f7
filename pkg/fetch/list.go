package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
// listing costs a bounded amount of memory and time. creds, when not nil,
// are a volume's keys, used instead of the source's own.
func (f *Fetcher) List(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error) {
	switch ref.Scheme {
	case model.SchemeHF:
		return f.listHub(ctx, ref, creds)
	case model.SchemeOCI:
		return f.listOCI(ctx, ref, creds)
	case model.SchemeAzure:
		return f.listAzure(ctx, ref, creds)
	case model.SchemeGCS:
		return f.listGCS(ctx, ref, creds)
	}
	t, err := f.target(ctx, ref, creds)
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
		err := f.retry(ctx, s3Origin{t: t, bucket: ref.Bucket}, ref.Prefix, func() error {
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
	// The selection applies here, so neither the checksum HEADs of List nor
	// the access HEADs of CheckAccess touch files the ref leaves out.
	kept, err := filterFiles(ref, files)
	if err != nil || len(kept) == len(files) {
		return kept, sums, err
	}
	keptSums := make([]bool, 0, len(kept))
	for i, j := 0, 0; i < len(files) && j < len(kept); i++ {
		if files[i].Path == kept[j].Path {
			keptSums = append(keptSums, sums[i])
			j++
		}
	}
	return kept, keptSums, nil
}

// sourceDigests asks for the SHA-256 of every object the listing says was
// uploaded with one (a HEAD with checksum mode on). A full-object checksum
// is the SHA-256 of the bytes and goes in the file's Digest; a multipart
// upload's composite one ("…-N", the SHA-256 of its parts' SHA-256s) goes
// in Composite with the parts' sizes. The download must then match, or it
// fails and nothing is stored. A published checksum is never used to skip
// a download: only bytes this node downloaded and hashed prove a digest.
func (f *Fetcher) sourceDigests(ctx context.Context, t *target, ref model.Ref, files []model.File, sums []bool) error {
	var idx []int
	for i, ok := range sums {
		if ok {
			idx = append(idx, i)
		}
	}
	return each(ctx, accessHeads, len(idx), func(ctx context.Context, k int) error {
		fl := &files[idx[k]]
		key := objectKey(ref.Prefix, fl.Path)
		var out *s3.HeadObjectOutput
		err := f.retry(ctx, s3Origin{t: t, bucket: ref.Bucket}, key, func() error {
			var err error
			out, err = t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(key),
				ChecksumMode: types.ChecksumModeEnabled})
			return err
		}, nil, nil)
		if err != nil {
			return err
		}
		sum := aws.ToString(out.ChecksumSHA256)
		if sum == "" {
			return nil
		}
		b64, count, multi := strings.Cut(sum, "-")
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) != sha256.Size {
			return &Error{Class: ErrChanged, Bucket: ref.Bucket, Key: key,
				Msg: fmt.Sprintf("the server sent x-amz-checksum-sha256 %q, which is not a base64 SHA-256", sum)}
		}
		if !multi && out.ChecksumType != types.ChecksumTypeComposite {
			fl.Digest = model.SHA256(b)
			return nil
		}
		parts, err := f.partSizes(ctx, t, ref.Bucket, key)
		if err != nil || parts == nil {
			// No parts (versitygw publishes none): the checksum cannot be
			// checked. A server can as well publish no checksum at all, so
			// going on without it loses nothing.
			return err
		}
		c := &model.Composite{Parts: parts}
		copy(c.Sum[:], b)
		if n, err := strconv.Atoi(count); (multi && (err != nil || n != len(parts))) || c.Check(fl.Size) != nil {
			return &Error{Class: ErrChanged, Bucket: ref.Bucket, Key: key,
				Msg: fmt.Sprintf("the server's parts (%d, composite checksum %q) do not make up the %d listed bytes", len(parts), sum, fl.Size)}
		}
		fl.Composite = c
		return nil
	})
}

// maxParts is S3's limit on the parts of a multipart upload.
const maxParts = 10_000

// partSizes reads the sizes of a multipart object's parts, in order
// (GetObjectAttributes ObjectParts, a page of 1,000 at a time); nil if the
// server does not say.
func (f *Fetcher) partSizes(ctx context.Context, t *target, bucket, key string) ([]int64, error) {
	var sizes []int64
	var marker *string
	for {
		var out *s3.GetObjectAttributesOutput
		err := f.retry(ctx, s3Origin{t: t, bucket: bucket}, key, func() error {
			var err error
			out, err = t.client.GetObjectAttributes(ctx, &s3.GetObjectAttributesInput{Bucket: aws.String(bucket), Key: aws.String(key),
				ObjectAttributes: []types.ObjectAttributes{types.ObjectAttributesObjectParts}, MaxParts: aws.Int32(1000), PartNumberMarker: marker})
			return err
		}, nil, nil)
		if err != nil {
			return nil, err
		}
		op := out.ObjectParts
		if op == nil && sizes == nil {
			f.log.Debug("composite checksum without parts: not checked", "bucket", bucket, "key", key)
			return nil, nil
		}
		if op == nil {
			return nil, &Error{Class: ErrChanged, Bucket: bucket, Key: key, Msg: "the server's list of parts stopped half way"}
		}
		for _, p := range op.Parts {
			if int(aws.ToInt32(p.PartNumber)) != len(sizes)+1 || len(sizes) == maxParts {
				return nil, &Error{Class: ErrChanged, Bucket: bucket, Key: key,
					Msg: fmt.Sprintf("the server lists part %d after %d parts", aws.ToInt32(p.PartNumber), len(sizes))}
			}
			sizes = append(sizes, aws.ToInt64(p.Size))
		}
		if !aws.ToBool(op.IsTruncated) {
			return sizes, nil
		}
		if len(op.Parts) == 0 || aws.ToString(op.NextPartNumberMarker) == aws.ToString(marker) {
			return nil, &Error{Class: ErrChanged, Bucket: bucket, Key: key, Msg: "the server's list of parts is truncated but does not go on"}
		}
		marker = op.NextPartNumberMarker
	}
}
