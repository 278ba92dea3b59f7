package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// state is what must survive a restart: which revisions of which refs are
// held, who pins them, when they were last used. It is small and rewritten
// whole (temp + fsync + rename) on every change that matters; last-use
// updates are batched (Flush) because losing a few seconds of LRU order in a
// crash is harmless.
type state struct {
	Refs map[string]*refState `json:"refs"` // by model.Ref.ID()
}

type refState struct {
	Ref       string               `json:"ref"`     // location, model.Ref.Location().String()
	Current   string               `json:"current"` // newest committed revision
	Revisions map[string]*revState `json:"revisions"`
}

type revState struct {
	Size      int64                `json:"size"`
	Files     int                  `json:"files"`
	Committed time.Time            `json:"committed"`
	LastUse   time.Time            `json:"lastUse"`
	Pins      map[string]time.Time `json:"pins,omitempty"` // holder → since
}

func loadState(path string) (*state, error) {
	st := &state{Refs: map[string]*refState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache: read state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%w: state file %s: %v", ErrCorrupt, path, err)
	}
	if st.Refs == nil {
		st.Refs = map[string]*refState{}
	}
	for _, r := range st.Refs {
		if r.Revisions == nil {
			r.Revisions = map[string]*revState{}
		}
	}
	return st, nil
}

// saveLocked writes the state durably and empties the pin log; s.mu must be
// held. It is for changes of structure (a revision added or evicted), which
// must be on disk before the caller goes on.
func (s *Store) saveLocked() error {
	b, gen, err := s.snapshotLocked()
	if err != nil {
		return err
	}
	if err := s.write(b, gen); err != nil {
		s.dirty = true
		return err
	}
	return s.truncatePinLogLocked()
}

func (s *Store) snapshotLocked() ([]byte, uint64, error) {
	b, err := json.MarshalIndent(s.state, "", " ")
	if err != nil {
		return nil, 0, err
	}
	s.saveGen++
	s.dirty = false
	return b, s.saveGen, nil
}

// write stores snapshot gen unless a newer one is already on disk.
func (s *Store) write(b []byte, gen uint64) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if gen <= s.savedGen {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(s.root, fileState), b); err != nil {
		return fmt.Errorf("cache: save state: %w", classifyNoSpace(err))
	}
	s.savedGen = gen
	return nil
}

// Flush writes batched last-use times and pins, if any. The agent calls it
// now and then and at shutdown. The fsync happens outside s.mu, so pins and
// lookups never wait behind the disk. The pin log is not emptied here: ops
// logged while the write ran may be newer than the snapshot, and replaying
// ops the state already holds is harmless (see pins.go).
func (s *Store) Flush() error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	b, gen, err := s.snapshotLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.write(b, gen); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return err
	}
	return nil
}
