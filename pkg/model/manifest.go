package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// MaxFileSize is the largest file a manifest may list: S3's largest object.
// A listing can claim any size; one past this is a lie, and sizes are
// summed and allocated from.
const MaxFileSize = 5 << 40

// ErrInvalidManifest marks a manifest that does not decode or is inconsistent.
var ErrInvalidManifest = errors.New("model: invalid manifest")

// File is one file of a model.
type File struct {
	Path string `json:"path"` // relative, clean, slash-separated
	Size int64  `json:"size"`
	ETag string `json:"etag"`
	// Digest of the content; empty until the content is held by the cache,
	// or set from the source's published SHA-256, which the download must
	// then match.
	Digest Digest `json:"digest,omitempty"`
	// Composite is a multipart upload's published checksum, which the
	// download must match; only between listing and download, never stored.
	Composite *Composite `json:"-"`
}

// Composite is the SHA-256 checksum S3 keeps for an object uploaded in
// parts with one: the SHA-256 of the parts' SHA-256 digests, in order. It
// says nothing without the parts' sizes.
type Composite struct {
	Sum   [32]byte
	Parts []int64 // sizes, in order; they add up to the file's size
}

// Check says whether the parts add up to size.
func (c *Composite) Check(size int64) error {
	var n int64
	for _, p := range c.Parts {
		if p <= 0 || p > MaxFileSize {
			return fmt.Errorf("%w: a part of %d bytes", ErrInvalidManifest, p)
		}
		n += p
	}
	if n != size {
		return fmt.Errorf("%w: parts of %d bytes in all for a file of %d", ErrInvalidManifest, n, size)
	}
	return nil
}

// Manifest lists a model's files, sorted by path.
type Manifest struct {
	// Ref is the model's location (Ref.Location().String()).
	Ref string `json:"ref"`
	// SourceRevision is the source's own name for what was listed (the
	// Hub commit a branch named), read again by the download; "" for S3.
	// Not part of Revision, which the files alone decide.
	SourceRevision string `json:"sourceRevision,omitempty"`
	Files          []File `json:"files"`
}

// NewManifest sorts files and validates the result.
func NewManifest(ref Ref, files []File) (*Manifest, error) {
	m := &Manifest{Ref: ref.Location().String(), Files: slices.Clone(files)}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Revision is the manifest's digest: xxh64 over every (path, size, etag).
// Content digests are left out on purpose: the revision is then known from a
// single LIST, so "is my copy current?" costs one request and a revision can be
// pinned before anything is downloaded.
func (m *Manifest) Revision() string {
	h := xxhash.New()
	for _, f := range m.Files {
		fmt.Fprintf(h, "%s\x00%d\x00%s\n", f.Path, f.Size, f.ETag)
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// Size is the sum of file sizes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Complete reports whether every file has a digest.
func (m *Manifest) Complete() bool {
	for _, f := range m.Files {
		if f.Digest == "" {
			return false
		}
	}
	return true
}

// Validate checks order, uniqueness, path safety, sizes and that no file is
// also a directory of another (a/b and a/b/c cannot both exist on disk).
func (m *Manifest) Validate() error {
	var total int64
	if _, err := ParseRef(m.Ref); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	for i, f := range m.Files {
		if err := checkRelPath(f.Path); err != nil {
			return fmt.Errorf("%w: path %q %v", ErrInvalidManifest, f.Path, err)
		}
		if f.Size < 0 || f.Size > MaxFileSize {
			return fmt.Errorf("%w: %q has size %d, want 0 to %d (5 TiB, the largest S3 object)", ErrInvalidManifest, f.Path, f.Size, int64(MaxFileSize))
		}
		if total += f.Size; total < 0 {
			return fmt.Errorf("%w: the sizes of its files add up past %d bytes", ErrInvalidManifest, int64(math.MaxInt64))
		}
		if f.Digest != "" {
			if err := f.Digest.Validate(); err != nil {
				return fmt.Errorf("%w: %q: %v", ErrInvalidManifest, f.Path, err)
			}
		}
		if i == 0 {
			continue
		}
		prev := m.Files[i-1].Path
		if prev >= f.Path {
			return fmt.Errorf("%w: %q and %q are duplicate or out of order", ErrInvalidManifest, prev, f.Path)
		}
	}
	// A file P conflicts with any path starting with P + "/". Sorted order puts
	// those after P, but not always right after it ("a/b" < "a/b-c" < "a/b/c"),
	// so look them up in a set of files.
	files := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		files[f.Path] = true
	}
	for _, f := range m.Files {
		for dir := f.Path; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if files[dir] {
				return fmt.Errorf("%w: %q is both a file and the directory of %q", ErrInvalidManifest, dir, f.Path)
			}
		}
	}
	return nil
}

// Encode is the manifest's stored form.
func (m *Manifest) Encode() ([]byte, error) {
	return json.MarshalIndent(m, "", " ")
}

// DecodeManifest parses and validates a stored manifest.
func DecodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
