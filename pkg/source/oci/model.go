package oci

import (
	"context"
	"io"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Model is one repository at one tag or digest, as a source.Source. List
// resolves the tag to its manifest digest (the Listing's Revision) and
// lists that manifest; Open reads layers by their digests, which a tag
// that moves during a download does not change.
type Model struct {
	c        *Client
	repo, at string
}

var _ source.Source = (*Model)(nil)

// Model returns repo at at: a tag, "" for latest, or "sha256:HEX".
func (c *Client) Model(repo, at string) *Model { return &Model{c: c, repo: repo, at: at} }

// List resolves the tag (or digest) and lists its manifest's files.
func (m *Model) List(ctx context.Context) (source.Listing, error) {
	digest, files, err := m.c.List(ctx, m.repo, m.at)
	if err != nil {
		return source.Listing{}, err
	}
	return source.Listing{Revision: digest, Files: files}, nil
}

// Open reads bytes [off, end) of f's blob.
func (m *Model) Open(ctx context.Context, f model.File, off, end int64) (io.ReadCloser, error) {
	return m.c.Open(ctx, m.repo, f, off, end)
}
