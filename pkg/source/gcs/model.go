package gcs

import (
	"context"
	"io"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Model is every object under a prefix of a bucket, as a source.Source.
// GCS has no revision of a prefix; each file is pinned to the generation
// listed instead.
type Model struct {
	c              *Client
	bucket, prefix string
}

var _ source.Source = (*Model)(nil)

// Model returns the objects under prefix/ (no leading or trailing slash;
// "" is the whole bucket) in bucket.
func (c *Client) Model(bucket, prefix string) *Model {
	return &Model{c: c, bucket: bucket, prefix: prefix}
}

// List lists the model's objects.
func (m *Model) List(ctx context.Context) (source.Listing, error) {
	files, err := m.c.List(ctx, m.bucket, m.prefix)
	if err != nil {
		return source.Listing{}, err
	}
	return source.Listing{Files: files}, nil
}

// Open reads bytes [off, end) of f at its listed generation.
func (m *Model) Open(ctx context.Context, f model.File, off, end int64) (io.ReadCloser, error) {
	if _, _, err := model.RelPath("", f.Path); err != nil {
		return nil, err
	}
	return m.c.Open(ctx, m.bucket, ObjectName(m.prefix, f.Path), f, off, end)
}

// Stat says whether the client may read f at its listed generation.
func (m *Model) Stat(ctx context.Context, f model.File) error {
	if _, _, err := model.RelPath("", f.Path); err != nil {
		return err
	}
	return m.c.Stat(ctx, m.bucket, ObjectName(m.prefix, f.Path), f)
}
