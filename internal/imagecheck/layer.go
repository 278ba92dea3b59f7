package imagecheck

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strings"
)

// Layer media types this package reads. zstd layers are refused rather than
// skipped, so a check never passes on an image it could not look into.
const (
	mtLayerTar       = "application/vnd.oci.image.layer.v1.tar"
	mtLayerGzip      = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar"
	mtDockerLayerGz  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	maxGzipFileBytes = 1 << 30
)

// sizedReaderAt is a file's content: a section of the tar for an
// uncompressed layer, a copy in memory for a compressed one.
type sizedReaderAt interface {
	io.ReaderAt
	Size() int64
}

// findFiles applies the layers in order, as a container runtime unpacks
// them (a later layer's file replaces an earlier one; whiteouts delete), and
// returns the wanted files that end up as regular files, keyed by their
// path without the leading slash. Each layer is checked against its diff_id.
func (l *layout) findFiles(layers []descriptor, diffIDs, files []string) (map[string]sizedReaderAt, error) {
	want := map[string]bool{}
	for _, f := range files {
		want[strings.TrimPrefix(path.Clean(f), "/")] = true
	}
	found := map[string]sizedReaderAt{}
	for i, d := range layers {
		blob, err := l.blob(d)
		if err != nil {
			return nil, err
		}
		var ch layerChange
		switch d.MediaType {
		case mtLayerTar, mtDockerLayer:
			// The uncompressed layer is its own diff: no need to hash twice.
			if diffIDs[i] != d.Digest {
				return nil, fmt.Errorf("%w: layer %s: diff_id %s differs from the uncompressed layer's digest", ErrLayout, d.Digest, diffIDs[i])
			}
			ch, err = scanLayer(blob, want, true)
		case mtLayerGzip, mtDockerLayerGz:
			ch, err = scanGzipLayer(blob, want, diffIDs[i])
		default:
			return nil, fmt.Errorf("%w: layer %s: media type %q not read by this check", ErrLayout, d.Digest, d.MediaType)
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		ch.applyTo(found)
	}
	return found, nil
}

// layerChange is what one layer does to the wanted files. Whiteouts apply
// to the layers below only, whatever their order in this layer's tar, so a
// layer's deletions are applied before its additions.
type layerChange struct {
	deleted  []string // paths deleted with everything under them
	opaque   []string // directories whose lower content is hidden
	replaced map[string]sizedReaderAt
	shadowed []string // wanted paths this layer makes something else than a regular file
}

func (c layerChange) applyTo(found map[string]sizedReaderAt) {
	for k := range found {
		for _, d := range c.deleted {
			if k == d || strings.HasPrefix(k, d+"/") {
				delete(found, k)
			}
		}
		for _, d := range c.opaque {
			if d == "." || strings.HasPrefix(k, d+"/") {
				delete(found, k)
			}
		}
	}
	for _, k := range c.shadowed {
		delete(found, k)
	}
	for k, r := range c.replaced {
		found[k] = r
	}
}

// scanLayer reads one uncompressed layer tar. With seekable, r is a
// section of the image tar and each wanted file is returned as a section of
// it; otherwise the file is copied to memory.
func scanLayer(r io.Reader, want map[string]bool, seekable bool) (layerChange, error) {
	ch := layerChange{replaced: map[string]sizedReaderAt{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ch, nil
		}
		if err != nil {
			return ch, fmt.Errorf("%w: reading the layer tar: %v", ErrLayout, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		dir, base := path.Split(name)
		dir = path.Clean(dir)
		switch {
		case base == ".wh..wh..opq":
			ch.opaque = append(ch.opaque, dir)
		case strings.HasPrefix(base, ".wh."):
			ch.deleted = append(ch.deleted, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
		case want[name] && h.Typeflag != tar.TypeReg:
			ch.shadowed = append(ch.shadowed, name)
			delete(ch.replaced, name)
		case want[name]:
			content, err := fileContent(r, tr, h.Size, seekable)
			if err != nil {
				return ch, err
			}
			ch.replaced[name] = content
		}
	}
}

func fileContent(r io.Reader, tr *tar.Reader, size int64, seekable bool) (sizedReaderAt, error) {
	if seekable {
		sr := r.(*io.SectionReader)
		// As in openLayout: after Next the section's offset is where the
		// member's data starts.
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		return io.NewSectionReader(sr, off, size), nil
	}
	if size > maxGzipFileBytes {
		return nil, fmt.Errorf("%w: a wanted file of %d bytes is too big to check", ErrLayout, size)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, fmt.Errorf("%w: reading a file from the layer: %v", ErrLayout, err)
	}
	return bytes.NewReader(b), nil
}

// scanGzipLayer reads a gzip layer and checks the uncompressed stream
// against diffID.
func scanGzipLayer(blob io.Reader, want map[string]bool, diffID string) (layerChange, error) {
	zr, err := gzip.NewReader(blob)
	if err != nil {
		return layerChange{}, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	h := sha256.New()
	tee := io.TeeReader(zr, h)
	ch, err := scanLayer(tee, want, false)
	if err != nil {
		return ch, err
	}
	// The tar's end-of-archive blocks and any padding belong to the diff.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return ch, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return ch, fmt.Errorf("%w: uncompressed digest %s, diff_id says %s", ErrLayout, got, diffID)
	}
	return ch, nil
}
