package model

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// DigestAlgorithm names how a blob's digest is computed: the SHA-256 of the
// file's bytes, as Hugging Face LFS, OCI / ModelPack and S3's additional
// checksums publish it, so a digest can be checked against the source's and
// is a content address no tenant can forge (xxh64, the digest before it,
// has collisions anyone can build). The algorithm is part of every digest
// and blob path so it can change again.
//
// A whole-file SHA-256 is sequential. The store hashes bytes that arrive in
// order while they stream and reads the others back from the page cache
// once the bytes before them are in (see cache.Ingest); resumes and
// integrity of single leaves use the per-leaf xxh64 of the ingest journal,
// which only guards against torn writes of this node's own disk.
const DigestAlgorithm = "sha256"

// LegacyAlgorithm is the digest of stores written before SHA-256: xxh64
// over the xxh64 of each leaf. Open converts such stores (see cache).
const LegacyAlgorithm = "xxh64t"

// LeafSize is the unit of resume: the ingest journal records whole leaves
// and ranged parts are multiples of it.
const LeafSize = 8 << 20

// ErrInvalidDigest marks a digest string that does not parse.
var ErrInvalidDigest = errors.New("model: invalid digest")

// Digest is "<algorithm>:<hex>".
type Digest string

var digestRE = regexp.MustCompile(`^[a-z0-9]{1,16}:[0-9a-f]{16,128}$`)

// Validate checks the form, not the content.
func (d Digest) Validate() error {
	if !digestRE.MatchString(string(d)) {
		return fmt.Errorf("%w %q", ErrInvalidDigest, string(d))
	}
	return nil
}

// Algorithm is the part before the colon.
func (d Digest) Algorithm() string { a, _, _ := strings.Cut(string(d), ":"); return a }

// Hex is the part after the colon.
func (d Digest) Hex() string { _, h, _ := strings.Cut(string(d), ":"); return h }

// SHA256 is the digest of a finished SHA-256 sum.
func SHA256(sum []byte) Digest { return Digest(DigestAlgorithm + ":" + hex.EncodeToString(sum)) }

// LeafCount is the number of leaves of a blob of size bytes (0 for empty).
func LeafCount(size int64) int { return int((size + LeafSize - 1) / LeafSize) }

// LeafRange is the byte range [off, off+n) of leaf i of a blob of size bytes.
func LeafRange(size int64, i int) (off, n int64) {
	off = int64(i) * LeafSize
	return off, min(LeafSize, size-off)
}

// DigestReader hashes exactly size bytes of r: the slow path (verify,
// conversion of old stores); downloads hash while they stream.
func DigestReader(r io.Reader, size int64, buf []byte) (Digest, error) {
	if len(buf) == 0 {
		buf = make([]byte, 1<<20)
	}
	h := sha256.New()
	got, err := io.CopyBuffer(h, io.LimitReader(r, size), buf)
	if err != nil {
		return "", err
	}
	if got != size {
		return "", fmt.Errorf("model: %w after %d of %d bytes", io.ErrUnexpectedEOF, got, size)
	}
	var extra [1]byte
	if m, _ := io.ReadFull(r, extra[:]); m != 0 {
		return "", fmt.Errorf("model: more than %d bytes", size)
	}
	return SHA256(h.Sum(nil)), nil
}
