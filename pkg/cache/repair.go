package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// BlobSource names an object that holds content d, taken from the manifest
// of a revision that links it, so a quarantined blob can be fetched again.
// The manifest returned lists that one file, with d as its digest.
func (s *Store) BlobSource(d model.Digest) (model.Ref, *model.Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.state.Refs))
	for id := range s.state.Refs {
		ids = append(ids, id)
	}
	sort.Strings(ids) // deterministic: the same source for the same store
	for _, id := range ids {
		rs := s.state.Refs[id]
		for rev := range rs.Revisions {
			m := s.manifests[manifestKey(id, rev)]
			if m == nil {
				continue
			}
			for _, f := range m.Files {
				if f.Digest != d {
					continue
				}
				ref, err := model.ParseRef(rs.Ref)
				if err != nil {
					return model.Ref{}, nil, err
				}
				return ref, &model.Manifest{Ref: rs.Ref, Files: []model.File{f}}, nil
			}
		}
	}
	return model.Ref{}, nil, fmt.Errorf("%w: no held revision links %s", ErrNotFound, d)
}

// Relink swaps the blob of digest d (committed again after a quarantine)
// into every model tree that links d, and returns those revisions. Each file
// is replaced by one rename of a fresh hard link over it, so a pod reading
// the tree through its mount opens either the old inode or the new one,
// never a half-written file; a reader that holds the old file open keeps it.
func (s *Store) Relink(d model.Digest) ([]string, error) {
	blob := s.blobPath(d)
	if _, err := os.Stat(blob); err != nil {
		return nil, fmt.Errorf("cache: relink %s: %w", d, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var done []string
	for id, rs := range s.state.Refs {
		for rev := range rs.Revisions {
			m := s.manifests[manifestKey(id, rev)]
			if m == nil || !linksDigest(m, d) {
				continue
			}
			tree := s.treePath(id, rev)
			for _, f := range m.Files {
				if f.Digest != d {
					continue
				}
				dst := filepath.Join(tree, filepath.FromSlash(f.Path))
				if same, _ := sameFile(blob, dst); same {
					continue
				}
				tmp := filepath.Join(filepath.Dir(dst), fmt.Sprintf(".repair-%d", time.Now().UnixNano()))
				if err := os.Link(blob, tmp); err != nil {
					return done, fmt.Errorf("cache: relink %s in %s: %w", f.Path, rs.Ref, err)
				}
				if err := os.Rename(tmp, dst); err != nil {
					os.Remove(tmp)
					return done, fmt.Errorf("cache: relink %s in %s: %w", f.Path, rs.Ref, err)
				}
				if err := syncDir(filepath.Dir(dst)); err != nil {
					s.log.Warn("fsync after relink", "dir", filepath.Dir(dst), "err", err)
				}
			}
			done = append(done, rs.Ref+" "+rev)
		}
	}
	sort.Strings(done)
	return done, nil
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
