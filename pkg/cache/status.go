package cache

import (
	"sort"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// Status is a snapshot of the store for the status CLI and metrics.
type Status struct {
	Root          string        `json:"root"`
	CapacityBytes int64         `json:"capacityBytes"`
	UsedBytes     int64         `json:"usedBytes"`     // blobs on disk
	ReservedBytes int64         `json:"reservedBytes"` // promised to running downloads
	LogicalBytes  int64         `json:"logicalBytes"`  // sum of every held revision's size
	SavedBytes    int64         `json:"savedBytes"`    // logical minus unique content: what dedup saves
	HighWatermark float64       `json:"highWatermark"`
	LowWatermark  float64       `json:"lowWatermark"`
	Evictions     int64         `json:"evictions"` // since the store opened
	Models        []ModelStatus `json:"models"`
}

// ModelStatus is one held revision.
type ModelStatus struct {
	Ref       string    `json:"ref"`
	Revision  string    `json:"revision"`
	Current   bool      `json:"current"` // the revision an unpinned ref resolves to
	SizeBytes int64     `json:"sizeBytes"`
	Files     int       `json:"files"`
	Committed time.Time `json:"committed"`
	LastUse   time.Time `json:"lastUse"`
	Pins      []string  `json:"pins,omitempty"`
	Path      string    `json:"path"`
}

// Status reports capacity, usage, dedup savings and every held revision.
func (s *Store) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Root: s.root, CapacityBytes: s.opts.Capacity, UsedBytes: s.used,
		HighWatermark: s.opts.HighWatermark, LowWatermark: s.opts.LowWatermark, Evictions: s.evictions}
	for r := range s.reserved {
		st.ReservedBytes += r.bytes
	}
	unique := map[model.Digest]int64{}
	for id, rs := range s.state.Refs {
		for rev, r := range rs.Revisions {
			st.LogicalBytes += r.Size
			if m := s.manifests[manifestKey(id, rev)]; m != nil {
				for _, f := range m.Files {
					unique[f.Digest] = f.Size
				}
			}
			st.Models = append(st.Models, ModelStatus{Ref: rs.Ref, Revision: rev, Current: rev == rs.Current,
				SizeBytes: r.Size, Files: r.Files, Committed: r.Committed, LastUse: r.LastUse,
				Pins: holders(r.Pins), Path: s.treePath(id, rev)})
		}
	}
	var u int64
	for _, n := range unique {
		u += n
	}
	st.SavedBytes = st.LogicalBytes - u
	sort.Slice(st.Models, func(i, j int) bool {
		a, b := st.Models[i], st.Models[j]
		if a.Ref != b.Ref {
			return a.Ref < b.Ref
		}
		return a.Committed.Before(b.Committed)
	})
	return st
}
