package cache

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
)

// Stores written before content was named by SHA-256 hold blobs under
// blobs/xxh64t/ and name model directories by a 16-hex xxh64 of the ref.
// Open converts such a store in place instead of dropping it: a node keeps
// its models (and the pods reading them their files) across the upgrade.
//
//  1. every old blob is hashed with SHA-256; the old → new names are written
//     to upgrade.map (atomically), so a crash later never loses them;
//  2. each manifest is rewritten with the new digests under the ref's new
//     ID, and its tree renamed after it (the tree's files are hard links to
//     the blobs, so they stay valid: a rename keeps the inode);
//  3. blobs are renamed into blobs/sha256/;
//  4. old ingests and the old etag index are dropped (their keys carry no
//     scope; a partial download starts again), state.json is re-keyed by
//     recover, and upgrade.map and blobs/xxh64t/ are removed.
//
// Every step is idempotent: a conversion cut short by a crash is finished
// by the next Open. Its cost is one read of every blob (SHA-256 at about
// 1.6 GB/s per core here), once.
const fileUpgradeMap = "upgrade.map"

func (s *Store) upgrade() error {
	oldDir := filepath.Join(s.root, dirBlobs, model.LegacyAlgorithm)
	if _, err := os.Stat(oldDir); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	s.log.Info("converting the store to SHA-256 content digests (once; reads every blob)", "root", s.root)
	names, err := s.upgradeHash(oldDir)
	if err != nil {
		return err
	}
	if err := s.upgradeManifests(names); err != nil {
		return err
	}
	for old, d := range names {
		src, dst := filepath.Join(oldDir, old), s.blobPath(d)
		if _, err := os.Lstat(dst); err == nil {
			os.Remove(src) // moved before a crash, or the same content twice
			continue
		}
		if err := os.Rename(src, dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cache: upgrade: move blob: %w", err)
		}
	}
	if err := syncDir(filepath.Join(s.root, dirBlobs, model.DigestAlgorithm)); err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	if err := removeChildren(filepath.Join(s.root, dirIngest), nil); err != nil {
		return err
	}
	os.Remove(filepath.Join(s.root, fileIndex))
	// Whatever is left in the old directory no manifest names: garbage.
	if err := os.RemoveAll(oldDir); err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	os.Remove(filepath.Join(s.root, fileUpgradeMap))
	s.log.Info("store converted to SHA-256", "blobs", len(names))
	return nil
}

// upgradeHash returns old hex name → new digest for every old blob, reading
// only the blobs upgrade.map does not list yet.
func (s *Store) upgradeHash(oldDir string) (map[string]model.Digest, error) {
	names := map[string]model.Digest{}
	path := filepath.Join(s.root, fileUpgradeMap)
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			old, d, ok := strings.Cut(sc.Text(), " ")
			if ok && model.Digest(d).Validate() == nil {
				names[old] = model.Digest(d)
			}
		}
		f.Close()
	}
	entries, err := os.ReadDir(oldDir)
	if err != nil {
		return nil, fmt.Errorf("cache: upgrade: %w", err)
	}
	buf := make([]byte, verifyBuffer)
	for i, e := range entries {
		if _, ok := names[e.Name()]; ok {
			continue
		}
		f, err := os.Open(filepath.Join(oldDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("cache: upgrade: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cache: upgrade: %w", err)
		}
		d, err := model.DigestReader(f, fi.Size(), buf)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cache: upgrade: hash %s: %w", e.Name(), err)
		}
		names[e.Name()] = d
		if (i+1)%1000 == 0 {
			s.log.Info("converting the store", "hashed", i+1, "of", len(entries))
		}
	}
	var sb strings.Builder
	for old, d := range names {
		fmt.Fprintf(&sb, "%s %s\n", old, d)
	}
	if err := writeFileAtomic(path, []byte(sb.String())); err != nil {
		return nil, fmt.Errorf("cache: upgrade: write %s: %w", fileUpgradeMap, classifyNoSpace(err))
	}
	return names, nil
}

// upgradeManifests rewrites every manifest with new digests under its ref's
// new ID and moves its tree along. A manifest naming a blob that is gone is
// dropped (recover then drops its tree).
func (s *Store) upgradeManifests(names map[string]model.Digest) error {
	dirs, err := os.ReadDir(filepath.Join(s.root, dirManifests))
	if err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	for _, dir := range dirs {
		oldID := dir.Name()
		files, _ := os.ReadDir(filepath.Join(s.root, dirManifests, oldID))
		for _, f := range files {
			rev, ok := strings.CutSuffix(f.Name(), ".json")
			if !ok {
				continue
			}
			if err := s.upgradeManifest(oldID, rev, names); err != nil {
				return err
			}
		}
		os.Remove(filepath.Join(s.root, dirManifests, oldID)) // only if empty
		os.Remove(filepath.Join(s.root, dirModels, oldID))
	}
	return nil
}

func (s *Store) upgradeManifest(oldID, rev string, names map[string]model.Digest) error {
	oldPath := s.manifestPath(oldID, rev)
	b, err := os.ReadFile(oldPath)
	if err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	m, err := model.DecodeManifest(b)
	if err != nil {
		s.log.Warn("upgrade: dropping a manifest that does not decode", "path", oldPath, "err", err)
		return os.Remove(oldPath)
	}
	for i, f := range m.Files {
		if f.Digest.Algorithm() != model.LegacyAlgorithm {
			continue
		}
		d, ok := names[f.Digest.Hex()]
		if !ok {
			s.log.Warn("upgrade: dropping a manifest whose blob is gone", "path", oldPath, "digest", f.Digest)
			return os.Remove(oldPath)
		}
		m.Files[i].Digest = d
	}
	ref, _ := model.ParseRef(m.Ref)
	newID := ref.ID()
	nb, err := m.Encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.manifestPath(newID, rev)), 0o755); err != nil {
		return fmt.Errorf("cache: upgrade: %w", classifyNoSpace(err))
	}
	if err := writeFileAtomic(s.manifestPath(newID, rev), nb); err != nil {
		return fmt.Errorf("cache: upgrade: write manifest: %w", classifyNoSpace(err))
	}
	if newID == oldID {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(s.root, dirModels, newID), 0o755); err != nil {
		return fmt.Errorf("cache: upgrade: %w", classifyNoSpace(err))
	}
	err = os.Rename(s.treePath(oldID, rev), s.treePath(newID, rev))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cache: upgrade: move tree: %w", err)
	}
	if err := syncDir(filepath.Join(s.root, dirModels, newID)); err != nil {
		return fmt.Errorf("cache: upgrade: %w", err)
	}
	return os.Remove(oldPath)
}

// rekeyState moves state entries kept under an older form of their ref's
// ID to the current one, and returns old → new for the pin log's replay.
func (st *state) rekey() map[string]string {
	moved := map[string]string{}
	for id, rs := range st.Refs {
		ref, err := model.ParseRef(rs.Ref)
		if err != nil || ref.ID() == id {
			continue
		}
		delete(st.Refs, id)
		st.Refs[ref.ID()] = rs
		moved[id] = ref.ID()
	}
	return moved
}
