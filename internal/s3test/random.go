package s3test

import (
	"encoding/binary"
	"io"
)

// RandomBytes returns n deterministic pseudo-random bytes for seed: the same
// seed always gives the same bytes, so a test can regenerate what it uploaded
// instead of keeping it. Incompressible, so no layer can cheat by compressing.
func RandomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	fill(b, seed, 0)
	return b
}

// RandomReader streams the same bytes as RandomBytes(seed, n) without holding
// them, for objects too large to keep in memory. It also implements
// io.ReaderAt and io.Seeker.
func RandomReader(seed uint64, n int64) *Random {
	return &Random{seed: seed, size: n}
}

// Random is a deterministic stream of pseudo-random bytes (see RandomReader).
type Random struct {
	seed      uint64
	size, off int64
}

// Size is the stream's length.
func (r *Random) Size() int64 { return r.size }

// Read implements io.Reader.
func (r *Random) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

// ReadAt implements io.ReaderAt.
func (r *Random) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := r.size - off; int64(n) > rest {
		n = int(rest)
	}
	fill(p[:n], r.seed, off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek implements io.Seeker (minio-go rewinds readers on retry).
func (r *Random) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	r.off = offset
	return offset, nil
}

// fill writes the stream's bytes [off, off+len(b)) into b. Word i of the
// stream is splitmix64(seed, i): stateless, so any offset can be produced
// directly (ReadAt) and a word costs a few multiplications (GB/s).
func fill(b []byte, seed uint64, off int64) {
	word := uint64(off / 8)
	if skip := int(off % 8); skip != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix(seed, word))
		n := copy(b, w[skip:])
		b = b[n:]
		word++
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, mix(seed, word))
		b = b[8:]
		word++
	}
	if len(b) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix(seed, word))
		copy(b, w[:])
	}
}

func mix(seed, i uint64) uint64 {
	z := seed*0x9e3779b97f4a7c15 + (i+1)*0xbf58476d1ce4e5b9
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
