package hf

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Model is one repo at one revision, as a source.Source. List resolves the
// revision to its commit and lists that commit; Open reads the commit of
// the last List (or the revision itself when it is a commit), so a branch
// that moves during a download changes nothing of it.
type Model struct {
	c              *Client
	repo, revision string

	mu     sync.Mutex
	commit string
}

var _ source.Source = (*Model)(nil)

// Model returns repo at revision ("" is main).
func (c *Client) Model(repo, revision string) *Model {
	m := &Model{c: c, repo: repo, revision: revision}
	if commitRE.MatchString(revision) {
		m.commit = revision
	}
	return m
}

// List resolves the revision and lists its commit.
func (m *Model) List(ctx context.Context) (source.Listing, error) {
	commit, err := m.c.Resolve(ctx, m.repo, m.revision)
	if err != nil {
		return source.Listing{}, err
	}
	files, err := m.c.List(ctx, m.repo, commit)
	if err != nil {
		return source.Listing{}, err
	}
	m.mu.Lock()
	m.commit = commit
	m.mu.Unlock()
	return source.Listing{Revision: commit, Files: files}, nil
}

// Open reads bytes [off, end) of f at the listed commit.
func (m *Model) Open(ctx context.Context, f model.File, off, end int64) (io.ReadCloser, error) {
	m.mu.Lock()
	commit := m.commit
	m.mu.Unlock()
	if commit == "" {
		return nil, fmt.Errorf("hf: read %s: not listed yet, so no commit to read", where(m.repo, m.revision))
	}
	return m.c.Open(ctx, m.repo, commit, f, off, end)
}
