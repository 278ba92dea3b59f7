package csi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// record is what the plugin remembers of one published volume, so that a
// restarted plugin knows which pin each mount holds. It is written before the
// pin is taken and removed after the pin is dropped: a pin never exists
// without its record.
type record struct {
	VolumeID  string    `json:"volumeId"`
	Target    string    `json:"targetPath"`
	Ref       string    `json:"ref"` // with the pinned revision
	Revision  string    `json:"revision,omitempty"`
	Holder    string    `json:"holder"`
	Source    string    `json:"source,omitempty"` // model tree bind-mounted
	SizeBytes int64     `json:"sizeBytes,omitempty"`
	Files     int       `json:"files,omitempty"`
	Pod       string    `json:"pod,omitempty"`
	Published time.Time `json:"published,omitzero"`
}

// records keeps one small JSON file per (volume, target) in a directory.
//
// Files are renamed into place but not fsynced: they only need to outlive the
// plugin process, not the kernel. A reboot takes every bind mount with it,
// and kubelet publishes again from scratch.
type records struct{ dir string }

func openRecords(dir string) (*records, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	return &records{dir: dir}, nil
}

func (r *records) path(volumeID, target string) string {
	return filepath.Join(r.dir, fmt.Sprintf("%016x.json", xxhash.Sum64String(volumeID+"\x00"+target)))
}

func (r *records) put(rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := r.path(rec.VolumeID, rec.Target)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write volume record: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write volume record: %w", err)
	}
	return nil
}

// get returns the record of (volumeID, target); ok is false when none.
func (r *records) get(volumeID, target string) (record, bool, error) {
	b, err := os.ReadFile(r.path(volumeID, target))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("read volume record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, false, fmt.Errorf("volume record %s is corrupt: %w", r.path(volumeID, target), err)
	}
	return rec, true, nil
}

func (r *records) remove(volumeID, target string) error {
	err := os.Remove(r.path(volumeID, target))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove volume record: %w", err)
	}
	return nil
}

// list returns every readable record; unreadable files are reported in bad
// (with their error) so the caller can log them without stopping.
func (r *records) list() (recs []record, bad map[string]error, err error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list volume records: %w", err)
	}
	bad = map[string]error{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, name))
		if err != nil {
			bad[name] = err
			continue
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.VolumeID == "" || rec.Target == "" {
			bad[name] = fmt.Errorf("corrupt record: %v", err)
			continue
		}
		recs = append(recs, rec)
	}
	return recs, bad, nil
}

// byVolume finds every record of volumeID (one per target).
func (r *records) byVolume(volumeID string) ([]record, error) {
	all, _, err := r.list()
	if err != nil {
		return nil, err
	}
	var out []record
	for _, rec := range all {
		if rec.VolumeID == volumeID {
			out = append(out, rec)
		}
	}
	return out, nil
}
