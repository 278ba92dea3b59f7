package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/time/rate"

	"github.com/modelcache/modelcache/pkg/model"
)

// VerifyReport says what Verify found.
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

// VerifyOption tunes Verify.
type VerifyOption func(*verifyConfig)

type verifyConfig struct{ limiter *rate.Limiter }

// WithRate caps the bytes read per second, so a background scrub does not
// take the disk from the models being served.
func WithRate(bytesPerSecond int64) VerifyOption {
	return func(c *verifyConfig) {
		if bytesPerSecond > 0 {
			c.limiter = rate.NewLimiter(rate.Limit(bytesPerSecond), verifyBuffer)
		}
	}
}

const verifyBuffer = 1 << 20

// Verify re-hashes every blob. A corrupt blob is moved to quarantine/, and
// every unpinned revision linking it is evicted so the next ensure fetches
// it again; pinned revisions are reported, not touched.
func (s *Store) Verify(ctx context.Context, opts ...VerifyOption) (VerifyReport, error) {
	var cfg verifyConfig
	for _, o := range opts {
		o(&cfg)
	}
	var rep VerifyReport
	algDir := filepath.Join(s.root, dirBlobs, model.DigestAlgorithm)
	entries, err := os.ReadDir(algDir)
	if err != nil {
		return rep, fmt.Errorf("cache: read blobs: %w", err)
	}
	buf := make([]byte, verifyBuffer)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		want := model.Digest(model.DigestAlgorithm + ":" + e.Name())
		got, size, err := hashFile(ctx, filepath.Join(algDir, e.Name()), buf, cfg.limiter)
		if errors.Is(err, os.ErrNotExist) {
			continue // evicted while we walked: nothing to check
		}
		if errors.Is(err, errVerifyStopped) || (err != nil && ctx.Err() != nil) {
			return rep, err // stopped, not corrupt
		}
		rep.Blobs++
		rep.Bytes += size
		if err == nil && got == want {
			continue
		}
		cb := CorruptBlob{Digest: want, Got: got}
		if err != nil {
			cb.Err = err.Error()
		}
		s.quarantine(&cb)
		rep.Corrupt = append(rep.Corrupt, cb)
	}
	return rep, nil
}

func hashFile(ctx context.Context, path string, buf []byte, lim *rate.Limiter) (model.Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	var r io.Reader = f
	if lim != nil {
		r = &pacedReader{ctx: ctx, r: f, lim: lim}
	}
	d, err := model.DigestReader(r, fi.Size(), buf)
	return d, fi.Size(), err
}

var errVerifyStopped = errors.New("cache: verify stopped")

// pacedReader waits for the limiter after each read.
type pacedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(b) > p.lim.Burst() {
		b = b[:p.lim.Burst()]
	}
	n, err := p.r.Read(b)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil {
			// WaitN fails before the deadline if it cannot make it: that
			// is a stop, never a sign of a corrupt blob.
			return n, fmt.Errorf("%w: %v", errVerifyStopped, werr)
		}
	}
	return n, err
}

func (s *Store) quarantine(cb *CorruptBlob) {
	s.mu.Lock()
	var trash []string
	for id, rs := range s.state.Refs {
		for rev, r := range rs.Revisions {
			m := s.manifests[manifestKey(id, rev)]
			if m == nil || !linksDigest(m, cb.Digest) {
				continue
			}
			name := rs.Ref + " " + rev
			if len(r.Pins) > 0 {
				cb.Pinned = append(cb.Pinned, name)
				continue
			}
			trash = append(trash, s.removeRevisionLocked(id, rev))
			cb.Evicted = append(cb.Evicted, name)
		}
	}
	src := s.blobPath(cb.Digest)
	if fi, err := os.Stat(src); err == nil {
		if err := os.Rename(src, filepath.Join(s.root, dirQuarantine, cb.Digest.Hex())); err == nil {
			s.used -= fi.Size()
		}
	}
	if err := s.saveLocked(); err != nil {
		s.log.Error("save state after quarantine", "err", err)
	}
	s.mu.Unlock()
	s.log.Error("corrupt blob quarantined", "digest", cb.Digest, "got", cb.Got, "evicted", cb.Evicted, "pinned", cb.Pinned)
	s.emptyTrash(trash)
}

func linksDigest(m *model.Manifest, d model.Digest) bool {
	for _, f := range m.Files {
		if f.Digest == d {
			return true
		}
	}
	return false
}
