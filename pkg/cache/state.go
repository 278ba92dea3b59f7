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

// saveLocked writes the state; s.mu must be held.
func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(s.state, "", " ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.root, fileState), b); err != nil {
		return fmt.Errorf("cache: save state: %w", classifyNoSpace(err))
	}
	s.dirty = false
	return nil
}

// Flush writes batched last-use times, if any. The agent calls it now and
// then and at shutdown.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	return s.saveLocked()
}
