// Package imagecheck opens an OCI image-layout tar, as `make image` writes
// it, and checks what a node will run: every platform asked for has an
// image, each image's config names the platform its index entry claims, and
// the binaries in it are statically linked ELF executables for that
// platform. It reads the tar in place (sections of the file, no unpacking)
// and verifies every blob it reads against its digest.
package imagecheck

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Error classes; Check wraps them, so match with errors.Is.
var (
	// ErrLayout: the tar is not a well-formed OCI image layout (missing or
	// bad index.json, a blob missing or not matching its digest, a media
	// type this package does not read).
	ErrLayout = errors.New("imagecheck: bad image layout")
	// ErrPlatform: a wanted platform has no image, or an image's config
	// names another platform than its index entry.
	ErrPlatform = errors.New("imagecheck: wrong platform")
	// ErrMissingFile: a wanted file is not in an image (or is not a
	// regular file).
	ErrMissingFile = errors.New("imagecheck: file missing")
	// ErrNotELF: a wanted file is not an ELF file.
	ErrNotELF = errors.New("imagecheck: not an ELF file")
	// ErrMachine: an ELF file is built for another machine than its image's
	// platform.
	ErrMachine = errors.New("imagecheck: wrong ELF machine")
	// ErrNotStatic: an ELF file asks for a dynamic loader (PT_INTERP) or
	// shared libraries (DT_NEEDED).
	ErrNotStatic = errors.New("imagecheck: not statically linked")
	// ErrBuild: a Go binary's build settings differ from the release build
	// (GOOS/GOARCH of the platform, CGO_ENABLED=0, -trimpath).
	ErrBuild = errors.New("imagecheck: wrong Go build settings")
)

// Want is what an image tar must hold.
type Want struct {
	// Platforms as os/arch, e.g. "linux/amd64"; each must have an image.
	Platforms []string
	// Files are absolute paths that each image must hold as static Go
	// executables for its platform, e.g. /usr/local/bin/cache-agent.
	Files []string
}

// Image is one platform's image as found in the tar.
type Image struct {
	Platform string // os/arch[/variant], from the config
	Manifest string // digest
	Files    []File
}

// File is one checked binary.
type File struct {
	Path    string
	Size    int64
	Machine string // e.g. EM_AARCH64
}

// Check opens the image-layout tar at path and checks it against want. It
// checks every image it finds, not only the wanted platforms, and returns
// all problems joined (each wraps one of the Err classes above) with what
// it could read.
func Check(path string, want Want) ([]Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	l, err := openLayout(f)
	if err != nil {
		return nil, err
	}
	descs, err := l.manifests()
	if err != nil {
		return nil, err
	}
	var (
		images []Image
		errs   []error
		seen   = map[string]bool{}
	)
	for _, d := range descs {
		img, err := l.checkImage(d, want.Files)
		if img.Platform != "" {
			key := osArch(img.Platform)
			if seen[key] {
				errs = append(errs, fmt.Errorf("%w: two images for %s", ErrLayout, key))
			}
			seen[key] = true
			images = append(images, img)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range want.Platforms {
		if !seen[p] {
			errs = append(errs, fmt.Errorf("%w: no image for %s", ErrPlatform, p))
		}
	}
	return images, errors.Join(errs...)
}

// osArch drops the variant: arm64 and arm64/v8 are one platform to a node.
func osArch(p string) string {
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 {
		return p
	}
	return parts[0] + "/" + parts[1]
}

const (
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtDockerList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerManif = "application/vnd.docker.distribution.manifest.v2+json"
	maxJSONBlob   = 4 << 20
	maxIndexDepth = 4
)

type descriptor struct {
	MediaType string    `json:"mediaType"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	Platform  *platform `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

func (p platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

type index struct {
	Manifests []descriptor `json:"manifests"`
}

type manifest struct {
	Config descriptor   `json:"config"`
	Layers []descriptor `json:"layers"`
}

type imageConfig struct {
	platform
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// layout is the tar's table of contents: where each member's data lies in
// the file, so blobs are read as sections without unpacking.
type layout struct {
	f        *os.File
	members  map[string]*io.SectionReader
	verified map[string]bool
}

func openLayout(f *os.File) (*layout, error) {
	l := &layout{f: f, members: map[string]*io.SectionReader{}, verified: map[string]bool{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading the tar: %v", ErrLayout, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		// tar.Reader reads whole 512-byte blocks and buffers nothing, so
		// the file offset after Next is where this member's data starts.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		l.members[path.Clean(strings.TrimPrefix(h.Name, "./"))] = io.NewSectionReader(f, off, h.Size)
	}
	return l, nil
}

// manifests walks index.json, and image indexes under it, down to image
// manifests; a manifest keeps the platform its index entry gives it.
func (l *layout) manifests() ([]descriptor, error) {
	if _, ok := l.members["oci-layout"]; !ok {
		return nil, fmt.Errorf("%w: no oci-layout file", ErrLayout)
	}
	r, ok := l.members["index.json"]
	if !ok {
		return nil, fmt.Errorf("%w: no index.json", ErrLayout)
	}
	var idx index
	if err := decodeJSON(r, &idx); err != nil {
		return nil, fmt.Errorf("%w: index.json: %v", ErrLayout, err)
	}
	var out []descriptor
	var walk func(ds []descriptor, depth int) error
	walk = func(ds []descriptor, depth int) error {
		for _, d := range ds {
			switch d.MediaType {
			case mtOCIManifest, mtDockerManif:
				out = append(out, d)
			case mtOCIIndex, mtDockerList:
				if depth >= maxIndexDepth {
					return fmt.Errorf("%w: image indexes nested deeper than %d", ErrLayout, maxIndexDepth)
				}
				var child index
				if err := l.readJSON(d, &child); err != nil {
					return err
				}
				if err := walk(child.Manifests, depth+1); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: %s: media type %q is neither an index nor a manifest", ErrLayout, d.Digest, d.MediaType)
			}
		}
		return nil
	}
	if err := walk(idx.Manifests, 0); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: index.json leads to no image manifest", ErrLayout)
	}
	return out, nil
}

// checkImage checks one manifest: its config against the index entry's
// platform, then each wanted file. The returned Image has a Platform once
// the config was read.
func (l *layout) checkImage(d descriptor, files []string) (Image, error) {
	img := Image{Manifest: d.Digest}
	var m manifest
	if err := l.readJSON(d, &m); err != nil {
		return img, err
	}
	var cfg imageConfig
	if err := l.readJSON(m.Config, &cfg); err != nil {
		return img, err
	}
	img.Platform = cfg.platform.String()
	var errs []error
	if d.Platform != nil && !samePlatform(*d.Platform, cfg.platform) {
		errs = append(errs, fmt.Errorf("%w: manifest %s: the index says %s, its config says %s",
			ErrPlatform, d.Digest, d.Platform, cfg.platform))
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return img, fmt.Errorf("%w: %s: %d layers but %d diff_ids", ErrLayout, img.Platform, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	found, err := l.findFiles(m.Layers, cfg.RootFS.DiffIDs, files)
	if err != nil {
		return img, fmt.Errorf("%s: %w", img.Platform, err)
	}
	for _, name := range files {
		r, ok := found[strings.TrimPrefix(path.Clean(name), "/")]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s: %w", img.Platform, name, ErrMissingFile))
			continue
		}
		machine, problems := checkBinary(r, cfg.platform)
		img.Files = append(img.Files, File{Path: name, Size: r.Size(), Machine: machine})
		for _, err := range problems {
			errs = append(errs, fmt.Errorf("%s: %s: %w", img.Platform, name, err))
		}
	}
	return img, errors.Join(errs...)
}

// samePlatform compares os and architecture, and the variant only when
// both name one (containerd reads a missing arm64 variant as v8).
func samePlatform(a, b platform) bool {
	if a.OS != b.OS || a.Architecture != b.Architecture {
		return false
	}
	return a.Variant == "" || b.Variant == "" || a.Variant == b.Variant
}

// blob returns the blob d names, after checking its size and digest.
func (l *layout) blob(d descriptor) (*io.SectionReader, error) {
	hexDigest, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok || len(hexDigest) != 64 {
		return nil, fmt.Errorf("%w: digest %q is not sha256", ErrLayout, d.Digest)
	}
	r, ok := l.members["blobs/sha256/"+hexDigest]
	if !ok {
		return nil, fmt.Errorf("%w: blob %s is not in the tar", ErrLayout, d.Digest)
	}
	if r.Size() != d.Size {
		return nil, fmt.Errorf("%w: blob %s has %d bytes, its descriptor says %d", ErrLayout, d.Digest, r.Size(), d.Size)
	}
	if !l.verified[d.Digest] {
		got, err := sha256Of(io.NewSectionReader(r, 0, r.Size()))
		if err != nil {
			return nil, err
		}
		if got != hexDigest {
			return nil, fmt.Errorf("%w: blob %s has digest sha256:%s", ErrLayout, d.Digest, got)
		}
		l.verified[d.Digest] = true
	}
	return io.NewSectionReader(r, 0, r.Size()), nil
}

func (l *layout) readJSON(d descriptor, v any) error {
	if d.Size > maxJSONBlob {
		return fmt.Errorf("%w: %s: %d bytes is too big for a manifest or config", ErrLayout, d.Digest, d.Size)
	}
	r, err := l.blob(d)
	if err != nil {
		return err
	}
	if err := decodeJSON(r, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrLayout, d.Digest, err)
	}
	return nil
}

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, maxJSONBlob)).Decode(v)
}

func sha256Of(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Platforms lists the os/arch of images, sorted, for messages.
func Platforms(images []Image) []string {
	var ps []string
	for _, img := range images {
		ps = append(ps, img.Platform)
	}
	sort.Strings(ps)
	return ps
}
