package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// Model is a committed revision of a model, ready to be mounted.
type Model struct {
	Ref      model.Ref // location
	Revision string
	// Path is the read-only tree of the revision: what gets bind-mounted.
	Path  string
	Size  int64
	Files int
}

func manifestKey(refID, rev string) string { return refID + "/" + rev }

func (s *Store) manifestPath(refID, rev string) string {
	return filepath.Join(s.root, dirManifests, refID, rev+".json")
}

func (s *Store) treePath(refID, rev string) string {
	return filepath.Join(s.root, dirModels, refID, rev)
}

// PutModel records a complete manifest and makes its tree visible: hard links
// to blobs are made in a temporary directory, synced, then renamed into place
// in one step, so a reader sees the whole tree or none of it. Every blob must
// be held (keep them with a Reservation while downloading). Putting a revision
// that is already held only makes it current.
func (s *Store) PutModel(m *model.Manifest) (Model, error) {
	if err := m.Validate(); err != nil {
		return Model{}, err
	}
	if !m.Complete() {
		return Model{}, fmt.Errorf("cache: put %s: manifest has files without digest", m.Ref)
	}
	ref, _ := model.ParseRef(m.Ref)
	id, rev := ref.ID(), m.Revision()
	s.mu.Lock()
	s.building[id]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.building[id]--; s.building[id] == 0 {
			delete(s.building, id)
		}
		s.mu.Unlock()
	}()

	tree := s.treePath(id, rev)
	if _, err := os.Stat(tree); errors.Is(err, os.ErrNotExist) {
		for _, f := range m.Files {
			if !s.HasBlob(f.Digest) {
				return Model{}, fmt.Errorf("%w: blob %s of %s/%s", ErrNotFound, f.Digest, m.Ref, f.Path)
			}
		}
		b, err := m.Encode()
		if err != nil {
			return Model{}, err
		}
		if err := os.MkdirAll(filepath.Dir(s.manifestPath(id, rev)), 0o755); err != nil {
			return Model{}, fmt.Errorf("cache: %w", classifyNoSpace(err))
		}
		// The manifest goes first: recovery trusts a tree only with its manifest.
		if err := writeFileAtomic(s.manifestPath(id, rev), b); err != nil {
			return Model{}, fmt.Errorf("cache: write manifest: %w", classifyNoSpace(err))
		}
		if err := s.buildTree(m, tree); err != nil {
			return Model{}, err
		}
	} else if err != nil {
		return Model{}, fmt.Errorf("cache: stat tree: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	rs := s.state.Refs[id]
	if rs == nil {
		rs = &refState{Ref: ref.Location().String(), Revisions: map[string]*revState{}}
		s.state.Refs[id] = rs
	}
	if rs.Revisions[rev] == nil {
		rs.Revisions[rev] = &revState{Size: m.Size(), Files: len(m.Files), Committed: now}
	}
	rs.Revisions[rev].LastUse = now
	rs.Current = rev
	s.manifests[manifestKey(id, rev)] = m
	s.notifyLocked()
	if err := s.saveLocked(); err != nil {
		return Model{}, err
	}
	return s.modelLocked(ref, rev), nil
}

func (s *Store) buildTree(m *model.Manifest, tree string) error {
	tmp := filepath.Join(filepath.Dir(tree), fmt.Sprintf(".tmp-%s-%d", filepath.Base(tree), time.Now().UnixNano()))
	fail := func(err error) error {
		os.RemoveAll(tmp)
		return fmt.Errorf("cache: build tree of %s: %w", m.Ref, classifyNoSpace(err))
	}
	dirs := map[string]bool{tmp: true}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fail(err)
	}
	for _, f := range m.Files {
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		// Defence in depth: model.Manifest.Validate already refused unsafe paths.
		if !strings.HasPrefix(dst, tmp+string(filepath.Separator)) {
			return fail(fmt.Errorf("%w: path %q escapes the model directory", model.ErrInvalidManifest, f.Path))
		}
		if d := filepath.Dir(dst); !dirs[d] {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fail(err)
			}
			for ; d != tmp && !dirs[d]; d = filepath.Dir(d) {
				dirs[d] = true
			}
		}
		if err := os.Link(s.blobPath(f.Digest), dst); err != nil {
			return fail(err)
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, tree); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(tree)); err != nil {
		s.log.Warn("fsync models dir", "err", err)
	}
	return nil
}

func (s *Store) modelLocked(ref model.Ref, rev string) Model {
	id := ref.ID()
	r := s.state.Refs[id].Revisions[rev]
	return Model{Ref: ref.Location(), Revision: rev, Path: s.treePath(id, rev), Size: r.Size, Files: r.Files}
}

// Lookup returns the held revision ref names: ref.Revision if set, else the
// newest held. It counts as a use for LRU. ErrNotFound if not held.
func (s *Store) Lookup(ref model.Ref) (Model, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.state.Refs[ref.ID()]
	rev := ref.Revision
	if rs != nil && rev == "" {
		rev = rs.Current
	}
	if rs == nil || rs.Revisions[rev] == nil {
		if ref.Revision != "" {
			return Model{}, fmt.Errorf("%w: %s revision %s", ErrNotFound, ref.Location(), ref.Revision)
		}
		return Model{}, fmt.Errorf("%w: %s", ErrNotFound, ref.Location())
	}
	rs.Revisions[rev].LastUse = s.opts.Now()
	s.dirty = true
	return s.modelLocked(ref, rev), nil
}

// Manifest returns the stored manifest of a held revision.
func (s *Store) Manifest(ref model.Ref, rev string) (*model.Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.manifests[manifestKey(ref.ID(), rev)]
	if m == nil {
		return nil, fmt.Errorf("%w: manifest of %s revision %s", ErrNotFound, ref.Location(), rev)
	}
	return m, nil
}

// Pin keeps a held revision from eviction until every holder unpins it. The
// holder is a free-form name (a volume ID, a workload); pinning twice is a
// no-op. The pin is in pins.log before Pin returns (see pins.go for why
// that log is not fsynced).
func (s *Store) Pin(ref model.Ref, rev, holder string) error {
	if holder == "" {
		return errors.New("cache: pin needs a holder")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.state.Refs[ref.ID()]
	if rs == nil || rs.Revisions[rev] == nil {
		return fmt.Errorf("%w: %s revision %s", ErrNotFound, ref.Location(), rev)
	}
	r := rs.Revisions[rev]
	if _, ok := r.Pins[holder]; ok {
		return nil
	}
	if r.Pins == nil {
		r.Pins = map[string]time.Time{}
	}
	now := s.opts.Now()
	r.Pins[holder] = now
	r.LastUse = now
	return s.logPinLocked(pinOp{Pin: true, ID: ref.ID(), Rev: rev, Holder: holder, At: now})
}

// Unpin drops holder's pin on rev, or on every revision of ref if rev is
// empty. Unpinning what is not pinned is a no-op: callers retry freely.
func (s *Store) Unpin(ref model.Ref, rev, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.state.Refs[ref.ID()]
	if rs == nil {
		return nil
	}
	for r, st := range rs.Revisions {
		if rev != "" && r != rev {
			continue
		}
		if _, ok := st.Pins[holder]; ok {
			delete(st.Pins, holder)
			if err := s.logPinLocked(pinOp{ID: ref.ID(), Rev: r, Holder: holder, At: s.opts.Now()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Evict removes rev of ref (every revision if rev is empty) unless pinned.
// Pinned revisions stay and are reported with ErrPinned; the others go.
func (s *Store) Evict(ref model.Ref, rev string) ([]string, error) {
	s.mu.Lock()
	id := ref.ID()
	rs := s.state.Refs[id]
	if rs == nil || (rev != "" && rs.Revisions[rev] == nil) {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, ref.Location(), rev)
	}
	var evicted, pinned []string
	var trash []string
	for r, st := range rs.Revisions {
		if rev != "" && r != rev {
			continue
		}
		if len(st.Pins) > 0 || s.building[id] > 0 {
			pinned = append(pinned, fmt.Sprintf("%s (%s)", r, strings.Join(holders(st.Pins), ", ")))
			continue
		}
		trash = append(trash, s.removeRevisionLocked(id, r))
		evicted = append(evicted, r)
		s.evictions++
	}
	err := s.saveLocked()
	s.mu.Unlock()
	s.emptyTrash(trash)
	sort.Strings(evicted)
	if err == nil && len(pinned) > 0 {
		sort.Strings(pinned)
		err = fmt.Errorf("%w: %s revisions %s kept", ErrPinned, ref.Location(), strings.Join(pinned, "; "))
		if len(evicted) > 0 {
			err = fmt.Errorf("%w; evicted %s", err, strings.Join(evicted, ", "))
		}
	}
	return evicted, err
}

func holders(pins map[string]time.Time) []string {
	h := make([]string, 0, len(pins))
	for k := range pins {
		h = append(h, k)
	}
	sort.Strings(h)
	return h
}

// removeRevisionLocked takes a revision out of the state and moves its tree to
// trash (one rename: a mounted pod keeps its files, new lookups miss). It
// returns what emptyTrash must delete once s.mu is released.
func (s *Store) removeRevisionLocked(id, rev string) string {
	s.notifyLocked()
	rs := s.state.Refs[id]
	delete(rs.Revisions, rev)
	if rs.Current == rev {
		rs.Current = ""
		var newest time.Time
		for r, st := range rs.Revisions {
			if st.Committed.After(newest) {
				rs.Current, newest = r, st.Committed
			}
		}
	}
	if len(rs.Revisions) == 0 {
		delete(s.state.Refs, id)
	}
	delete(s.manifests, manifestKey(id, rev))
	dst := filepath.Join(s.root, dirTrash, fmt.Sprintf("%s-%s-%d", id, rev, time.Now().UnixNano()))
	if err := os.Rename(s.treePath(id, rev), dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("move evicted tree to trash", "ref", rs.Ref, "revision", rev, "err", err)
	}
	if err := os.Remove(s.manifestPath(id, rev)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove evicted manifest", "ref", rs.Ref, "revision", rev, "err", err)
	}
	return dst
}

// emptyTrash deletes evicted trees, then every blob no tree links any more.
func (s *Store) emptyTrash(paths []string) {
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			s.log.Warn("empty trash", "path", p, "err", err)
		}
	}
	if len(paths) > 0 {
		s.gcBlobs()
	}
}

// Changed is signalled (coalesced, for one reader) whenever a revision
// becomes ready or is removed (evicted, quarantined), so the node's
// warm-model labels can follow at once instead of at the next resync.
func (s *Store) Changed() <-chan struct{} { return s.changed }

func (s *Store) notifyLocked() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}
