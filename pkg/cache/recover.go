package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
)

// recover brings the store back to a consistent state after any crash:
//   - half-built trees (models/*/.tmp-*) and trash are deleted;
//   - a tree counts only with its manifest, a manifest only with its tree;
//   - state.json entries without both are dropped, trees missing from state
//     (crash between rename and state write) are added back;
//   - used bytes are recounted from blobs/ and the etag index rebuilt.
//
// Ingests are kept: OpenIngest resumes them (one-leaf ingests, which it
// never resumes, are removed).
func (s *Store) recover() error {
	st, err := loadState(filepath.Join(s.root, fileState))
	if err != nil {
		return err
	}
	s.state = st
	if err := s.replayPinLog(st.rekey()); err != nil {
		return err
	}
	if err := removeChildren(filepath.Join(s.root, dirTrash), nil); err != nil {
		return err
	}
	// One-leaf ingests are never resumed (see oneLeafSuffix).
	strays, _ := filepath.Glob(filepath.Join(s.root, dirIngest, "*"+oneLeafSuffix))
	for _, p := range strays {
		os.Remove(p)
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.root, "*.tmp-*"))
	for _, p := range leftovers {
		os.Remove(p)
	}
	refDirs, err := os.ReadDir(filepath.Join(s.root, dirModels))
	if err != nil {
		return fmt.Errorf("cache: read models: %w", err)
	}
	held := map[string]map[string]*model.Manifest{} // ref ID → rev → manifest
	for _, rd := range refDirs {
		id := rd.Name()
		dir := filepath.Join(s.root, dirModels, id)
		if err := removeChildren(dir, func(n string) bool { return strings.HasPrefix(n, ".tmp-") }); err != nil {
			return err
		}
		revs, _ := os.ReadDir(dir)
		for _, r := range revs {
			m, err := s.readManifest(id, r.Name())
			if err != nil {
				s.log.Warn("recover: dropping tree without a valid manifest", "tree", filepath.Join(dir, r.Name()), "err", err)
				os.RemoveAll(filepath.Join(dir, r.Name()))
				continue
			}
			if held[id] == nil {
				held[id] = map[string]*model.Manifest{}
			}
			held[id][r.Name()] = m
		}
	}
	// Manifests without a tree: the crash hit while linking. Drop them; the
	// next ensure rebuilds the tree from blobs (the etag index finds them).
	mdirs, _ := os.ReadDir(filepath.Join(s.root, dirManifests))
	for _, md := range mdirs {
		files, _ := os.ReadDir(filepath.Join(s.root, dirManifests, md.Name()))
		for _, f := range files {
			rev := strings.TrimSuffix(f.Name(), ".json")
			if held[md.Name()][rev] == nil {
				os.Remove(filepath.Join(s.root, dirManifests, md.Name(), f.Name()))
			}
		}
	}
	now := s.opts.Now()
	extra := map[string]model.Digest{}
	for id, revs := range held {
		for rev, m := range revs {
			s.manifests[manifestKey(id, rev)] = m
			ref, _ := model.ParseRef(m.Ref)
			for _, f := range m.Files {
				if f.ETag != "" {
					extra[indexKey(ref.Scope(), f.ETag, f.Size)] = f.Digest
				}
			}
			rs := s.state.Refs[id]
			if rs == nil {
				rs = &refState{Ref: m.Ref, Revisions: map[string]*revState{}}
				s.state.Refs[id] = rs
			}
			if rs.Revisions[rev] == nil {
				rs.Revisions[rev] = &revState{Size: m.Size(), Files: len(m.Files), Committed: now, LastUse: now}
			}
			if rs.Current == "" {
				rs.Current = rev
			}
		}
	}
	for id, rs := range s.state.Refs {
		for rev := range rs.Revisions {
			if held[id][rev] == nil {
				delete(rs.Revisions, rev)
			}
		}
		if rs.Revisions[rs.Current] == nil {
			rs.Current = ""
			for rev, r := range rs.Revisions {
				if rs.Current == "" || r.Committed.After(rs.Revisions[rs.Current].Committed) {
					rs.Current = rev
				}
			}
		}
		if len(rs.Revisions) == 0 {
			delete(s.state.Refs, id)
		}
	}
	if err := s.countBlobs(); err != nil {
		return err
	}
	s.loadKept()
	if err := s.loadIndex(extra); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveLocked()
}

func (s *Store) readManifest(id, rev string) (*model.Manifest, error) {
	b, err := os.ReadFile(s.manifestPath(id, rev))
	if err != nil {
		return nil, err
	}
	m, err := model.DecodeManifest(b)
	if err != nil {
		return nil, err
	}
	ref, _ := model.ParseRef(m.Ref)
	if ref.ID() != id || m.Revision() != rev {
		return nil, fmt.Errorf("%w: manifest %s/%s describes %s revision %s", ErrCorrupt, id, rev, m.Ref, m.Revision())
	}
	return m, nil
}

func (s *Store) countBlobs() error {
	entries, err := os.ReadDir(filepath.Join(s.root, dirBlobs, model.DigestAlgorithm))
	if err != nil {
		return fmt.Errorf("cache: read blobs: %w", err)
	}
	s.used = 0
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			s.used += fi.Size()
		}
	}
	return nil
}

// removeChildren deletes the entries of dir that match (all if match is nil).
func removeChildren(dir string, match func(string) bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: read %s: %w", dir, err)
	}
	for _, e := range entries {
		if match == nil || match(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("cache: clean %s: %w", dir, err)
			}
		}
	}
	return nil
}
