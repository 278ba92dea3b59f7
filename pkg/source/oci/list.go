package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Manifest media types: the two manifests a model can be, and the two
// indexes it must not be (asked for too, so the registry answers with
// what the tag names instead of converting it).
const (
	MediaTypeManifest       = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeIndex          = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var acceptManifests = []string{MediaTypeManifest, MediaTypeDockerManifest, MediaTypeIndex, MediaTypeDockerList}

// Layer annotations that name a file: the OCI title (what `oras push`
// writes), ModelPack's file path, and its earlier CNAI name.
const (
	AnnotationTitle        = "org.opencontainers.image.title"
	AnnotationFilepath     = "org.cncf.model.filepath"
	AnnotationCNAIFilepath = "org.cnai.model.filepath"
	// annotationUnpack marks a directory `oras push` packed into a tarball.
	annotationUnpack = "io.deis.oras.content.unpack"
)

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Layers        []descriptor `json:"layers"`
	Manifests     []descriptor `json:"manifests"` // an index's
}

// List resolves at (a tag, "" for latest, or a sha256 digest) in repo to
// its manifest and returns the manifest's digest ("sha256:HEX", which
// names it for good) and its files, in the manifest's order.
func (c *Client) List(ctx context.Context, repo, at string) (string, []model.File, error) {
	where := c.where(repo, at)
	r, err := c.repository(repo)
	if err != nil {
		return "", nil, err
	}
	ref := at
	if ref == "" {
		ref = "latest"
	}
	if strings.Contains(ref, ":") && !digestRE.MatchString(ref) {
		return "", nil, fmt.Errorf("oci: %s: %q is neither a tag nor a sha256 digest", where, source.Trim(ref))
	}
	desc, rc, err := r.Manifests().FetchReference(ctx, ref)
	if err != nil {
		return "", nil, c.classify(ctx, where, "resolve", err)
	}
	defer rc.Close()
	if desc.Size > MaxManifestBytes {
		return "", nil, &source.Error{Class: source.ErrLimit, Where: where, Op: "resolve",
			Msg: fmt.Sprintf("a manifest of %d bytes (at most %d)", desc.Size, MaxManifestBytes)}
	}
	body, err := io.ReadAll(io.LimitReader(rc, MaxManifestBytes+1))
	if err != nil {
		return "", nil, c.classify(ctx, where, "resolve", err)
	}
	if len(body) > MaxManifestBytes {
		return "", nil, &source.Error{Class: source.ErrLimit, Where: where, Op: "resolve",
			Msg: fmt.Sprintf("a manifest of more than %d bytes", MaxManifestBytes)}
	}
	// The digest is what the bytes hash to, whatever the registry says:
	// it is the revision, and Open trusts the layers it lists.
	sum := sha256.Sum256(body)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if want := string(desc.Digest); want != got {
		return "", nil, source.ProtocolError(where, "resolve", "the registry names the manifest %s, its bytes are %s", source.Trim(want), got)
	}
	if digestRE.MatchString(at) && got != at {
		return "", nil, source.ProtocolError(where, "resolve", "asked for manifest %s, the registry sent %s", at, got)
	}
	files, err := c.files(where, desc.MediaType, body)
	if err != nil {
		return "", nil, err
	}
	return got, files, nil
}

// files reads a manifest's layers into the model's files.
func (c *Client) files(where, contentType string, body []byte) ([]model.File, error) {
	var m manifest
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&m); err != nil {
		return nil, source.ProtocolError(where, "list", "the manifest is not the JSON expected: %v", err)
	}
	mt := m.MediaType
	if ct, _, err := mime.ParseMediaType(contentType); err == nil && mt == "" {
		mt = ct
	} else if err == nil && ct != mt && ct != "application/json" {
		return nil, source.ProtocolError(where, "list", "the manifest says it is %q, the registry that it is %q", source.Trim(mt), source.Trim(ct))
	}
	switch mt {
	case MediaTypeManifest, MediaTypeDockerManifest:
	case MediaTypeIndex, MediaTypeDockerList:
		return nil, indexError(where, m)
	default:
		return nil, &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list",
			Msg: fmt.Sprintf("a manifest of type %q; want an OCI image manifest (%s) or a Docker v2 one", source.Clean(mt), MediaTypeManifest)}
	}
	if m.SchemaVersion != 2 {
		return nil, source.ProtocolError(where, "list", "schemaVersion %d, want 2", m.SchemaVersion)
	}
	var files []model.File
	seen := map[string]bool{}
	for i, l := range m.Layers {
		f, ok, err := fileOf(l)
		if err != nil {
			if se, isSE := err.(*source.Error); isSE {
				se.Where = where
				return nil, se
			}
			return nil, source.ProtocolError(where, "list", "layer %d: %v", i, err)
		}
		if !ok {
			continue
		}
		if seen[f.Path] {
			return nil, source.ProtocolError(where, "list", "%q is the path of two layers", f.Path)
		}
		seen[f.Path] = true
		if len(files) == c.maxFiles {
			return nil, &source.Error{Class: source.ErrLimit, Where: where, Op: "list", Msg: fmt.Sprintf("more than %d files (--max-files)", c.maxFiles)}
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, &source.Error{Class: source.ErrNotFound, Where: where, Op: "list",
			Msg: fmt.Sprintf("none of its %d layers names a file (annotation %s or %s): a container image is not a model artifact", len(m.Layers), AnnotationTitle, AnnotationFilepath)}
	}
	return files, nil
}

// fileOf checks one layer: ok is false for a layer that names no file.
func fileOf(l descriptor) (model.File, bool, error) {
	var path string
	for _, k := range []string{AnnotationTitle, AnnotationFilepath, AnnotationCNAIFilepath} {
		v, ok := l.Annotations[k]
		if !ok {
			continue
		}
		if path != "" && v != path {
			return model.File{}, false, fmt.Errorf("two file paths, %q and %q", source.Trim(path), source.Trim(v))
		}
		path = v
	}
	if path == "" {
		return model.File{}, false, nil
	}
	rel, skip, err := model.RelPath("", path)
	if err != nil || skip {
		return model.File{}, false, fmt.Errorf("file path %q: not a relative path inside the model", source.Trim(path))
	}
	if why := archive(l); why != "" {
		return model.File{}, false, &source.Error{Class: model.ErrInvalidRef, Op: "list",
			Msg: fmt.Sprintf("%q is %s: archive layers are not supported yet (push the files themselves, e.g. oras push, or ModelPack's .raw media types)", rel, why)}
	}
	if l.Size < 0 || l.Size > model.MaxFileSize {
		return model.File{}, false, fmt.Errorf("%q: a size of %d bytes", rel, l.Size)
	}
	if !digestRE.MatchString(l.Digest) {
		alg, _, _ := strings.Cut(l.Digest, ":")
		if alg != "sha256" && alg != "" && len(alg) < 20 {
			return model.File{}, false, fmt.Errorf("%q: digest algorithm %q is not supported (only sha256)", rel, source.Clean(alg))
		}
		return model.File{}, false, fmt.Errorf("%q: digest %q is not sha256: and 64 lowercase hex digits", rel, source.Trim(l.Digest))
	}
	hx := strings.TrimPrefix(l.Digest, "sha256:")
	return model.File{Path: rel, Size: l.Size, ETag: hx, Digest: model.Digest(model.DigestAlgorithm + ":" + hx)}, true, nil
}

// archive says why a layer's bytes are not the file itself ("" when they
// are): a directory oras packed, or a media type that says tar or a
// compression. The OCI image layer type without a compression is what
// oras push gives a plain file by default, so it is taken as the file.
func archive(l descriptor) string {
	if l.Annotations[annotationUnpack] == "true" {
		return "a directory packed by oras (" + annotationUnpack + ")"
	}
	if l.MediaType == "application/vnd.oci.image.layer.v1.tar" {
		return ""
	}
	_, sub, _ := strings.Cut(strings.ToLower(l.MediaType), "/")
	for tok := range strings.FieldsFuncSeq(sub, func(r rune) bool { return r == '.' || r == '+' || r == ';' }) {
		switch tok {
		case "tar":
			return fmt.Sprintf("a tar archive (%s)", source.Clean(l.MediaType))
		case "gzip", "gz", "tgz", "zstd", "zst", "bzip2", "xz", "lz4":
			return fmt.Sprintf("compressed (%s)", source.Clean(l.MediaType))
		}
	}
	return ""
}

// indexError names an index's manifests, so the engineer can pick one.
func indexError(where string, m manifest) error {
	var picks []string
	base, _, _ := strings.Cut(strings.TrimPrefix(where, "oci://"), "@")
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		base = base[:i]
	}
	for _, d := range m.Manifests {
		if len(picks) == 3 {
			picks = append(picks, "…")
			break
		}
		if !digestRE.MatchString(d.Digest) {
			continue
		}
		p := "oci://" + base + "@" + d.Digest
		if d.Platform != nil {
			p += " (" + source.Clean(d.Platform.OS+"/"+d.Platform.Architecture+strings.TrimSuffix("/"+d.Platform.Variant, "/")) + ")"
		}
		picks = append(picks, p)
	}
	msg := fmt.Sprintf("an index of %d manifests, pick a platform-specific manifest by digest", len(m.Manifests))
	if len(picks) > 0 {
		msg += ": " + strings.Join(picks, ", ")
	}
	return &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list", Msg: msg}
}
