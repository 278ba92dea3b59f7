package agentapi

import (
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// The status and verify answers. They mirror the store's own types
// (pkg/cache Status, ModelStatus, Partials, VerifyReport, CorruptBlob) field
// for field with the same JSON names, so that a caller decodes them without
// linking the store; pkg/agent copies the store's values into them, and its
// tests check the two encode alike.

// StatusReport is the status API's answer.
type StatusReport struct {
	Status
	// Partials: downloads in progress or kept for a resume, not in UsedBytes.
	Partials Partials   `json:"partials"`
	Jobs     []Progress `json:"jobs"`
}

// Status is a snapshot of the agent's store.
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

// Partials is what the store's ingest/ holds: downloads in progress and
// partial ones kept for a resume.
type Partials struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"` // allocated on disk (ingests are preallocated)
}

// VerifyReport says what a verify found.
type VerifyReport struct {
	Blobs   int           `json:"blobs"`
	Bytes   int64         `json:"bytes"`
	Corrupt []CorruptBlob `json:"corrupt,omitempty"`
}

// CorruptBlob is a blob whose content no longer matches its name.
type CorruptBlob struct {
	Digest model.Digest `json:"digest"`
	Got    model.Digest `json:"got,omitempty"`
	Err    string       `json:"error,omitempty"`
	// Evicted are the revisions that linked it and were removed; Pinned the
	// ones that stay because a holder uses them (they need a repair).
	Evicted []string `json:"evicted,omitempty"`
	Pinned  []string `json:"pinned,omitempty"`
	// Repaired are the pinned revisions whose file was fetched again and
	// swapped in; RepairError says why a repair failed.
	Repaired    []string `json:"repaired,omitempty"`
	RepairError string   `json:"repairError,omitempty"`
}
