package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// DigestAlgorithm names how a blob's digest is computed. "xxh64t" is xxh64
// over the big-endian xxh64 of each LeafSize leaf followed by the size. Unlike
// a plain xxh64 of the stream, leaves hash independently, so parallel ranged
// GETs hash their own parts while streaming and no byte is read twice; the
// algorithm is part of every digest and blob path so it can change later.
const DigestAlgorithm = "xxh64t"

// LeafSize is the leaf of the digest tree. Ranged parts are multiples of it.
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

// LeafCount is the number of leaves of a blob of size bytes (0 for empty).
func LeafCount(size int64) int { return int((size + LeafSize - 1) / LeafSize) }

// LeafRange is the byte range [off, off+n) of leaf i of a blob of size bytes.
func LeafRange(size int64, i int) (off, n int64) {
	off = int64(i) * LeafSize
	return off, min(LeafSize, size-off)
}

// TreeDigest combines leaf hashes (in order, len == LeafCount(size)) into the digest.
func TreeDigest(size int64, leaves []uint64) (Digest, error) {
	if len(leaves) != LeafCount(size) {
		return "", fmt.Errorf("model: %d leaf hashes for %d bytes, want %d", len(leaves), size, LeafCount(size))
	}
	h := xxhash.New()
	var b [8]byte
	for _, l := range leaves {
		binary.BigEndian.PutUint64(b[:], l)
		h.Write(b[:])
	}
	binary.BigEndian.PutUint64(b[:], uint64(size))
	h.Write(b[:])
	return Digest(fmt.Sprintf("%s:%016x", DigestAlgorithm, h.Sum64())), nil
}

// DigestReader hashes exactly size bytes of r. It is the slow path (verify,
// resume checks); downloads hash leaves as they stream.
func DigestReader(r io.Reader, size int64, buf []byte) (Digest, error) {
	if len(buf) == 0 {
		buf = make([]byte, 1<<20)
	}
	leaves := make([]uint64, 0, LeafCount(size))
	h := xxhash.New()
	for i := range LeafCount(size) {
		_, n := LeafRange(size, i)
		h.Reset()
		got, err := io.CopyBuffer(h, io.LimitReader(r, n), buf)
		if err != nil {
			return "", err
		}
		if got != n {
			return "", fmt.Errorf("model: %w after %d of %d bytes", io.ErrUnexpectedEOF, int64(i)*LeafSize+got, size)
		}
		leaves = append(leaves, h.Sum64())
	}
	var extra [1]byte
	if m, _ := io.ReadFull(r, extra[:]); m != 0 {
		return "", fmt.Errorf("model: more than %d bytes", size)
	}
	return TreeDigest(size, leaves)
}
