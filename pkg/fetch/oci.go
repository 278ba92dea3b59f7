package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/oci"
)

// ociModel is the OCI artifact ref names, at at (a tag, "" for latest, or
// a manifest digest), with the login that may read it: the volume's
// (creds), else its named source's, else none. A ref without a source
// reads anonymously over HTTPS; plain HTTP only through a source that says
// so, and a source's login goes to its own registry only.
//
// A volume's credentials map onto a registry login as the S3 pair does:
// AccessKeyID is the username and SecretAccessKey the password (the
// Secret's keys accessKeyID and secretAccessKey). A Hub token or an S3
// session token means nothing to a registry and is refused rather than
// ignored.
func (f *Fetcher) ociModel(ref model.Ref, creds *model.Credentials, at string) (*oci.Model, string, error) {
	where := "oci://" + ref.Registry + "/" + ref.Repo
	invalid := func(format string, a ...any) error {
		return &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list", Msg: fmt.Sprintf(format, a...)}
	}
	if ref.Endpoint != "" || ref.Region != "" {
		return nil, "", invalid("endpoint and region are not options of an oci:// ref: the registry is part of the ref")
	}
	src, named := f.sources[ref.Source]
	if ref.Source != "" && !named {
		return nil, "", &source.Error{Class: ErrUnknownSource, Where: where, Op: "list",
			Msg: fmt.Sprintf("source %q is not in the agent's sources file (%s)", ref.Source, sourceNames(f.sources))}
	}
	o := oci.Options{Registry: ref.Registry, HTTPClient: f.hubHTTP(), MaxFiles: f.maxFiles, UserAgent: "modelcache"}
	if named {
		if src.Type != SourceOCI {
			return nil, "", invalid("source %q is %s; an oci:// ref needs a source of type: oci", ref.Source, src.kind())
		}
		if src.Registry != ref.Registry {
			return nil, "", invalid("registry %s is not source %q's registry %s: a source's login goes to its own registry only", ref.Registry, ref.Source, src.Registry)
		}
		pw, err := src.ociPassword()
		if err != nil {
			return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: fmt.Sprintf("source %q: %v", ref.Source, err)}
		}
		o.PlainHTTP, o.Username, o.Password = src.PlainHTTP, src.Username, pw
	}
	if creds != nil {
		if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.Token != "" || creds.SessionToken != "" {
			return nil, "", invalid("an oci:// volume's secret needs a registry username and password, under the keys accessKeyID and secretAccessKey (no token or sessionToken)")
		}
		o.Username, o.Password = creds.AccessKeyID, creds.SecretAccessKey
	}
	c, err := oci.New(o)
	if err != nil {
		return nil, "", invalid("%v", err)
	}
	scheme := "https://"
	if o.PlainHTTP {
		scheme = "http://"
	}
	return c.Model(ref.Repo, at), scheme + ref.Registry + "/" + ref.Repo, nil
}

// listOCI lists an OCI artifact: its tag resolved to the manifest digest,
// which the manifest keeps (SourceRevision) so the download reads the
// layers of that manifest.
func (f *Fetcher) listOCI(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error) {
	m, _, err := f.ociModel(ref, creds, ref.At)
	if err != nil {
		return nil, err
	}
	return f.listSource(ctx, ref, m)
}

var manifestDigestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ociOrigin is where Fetch reads an OCI artifact: the blobs of the
// manifest digest it was listed at (content-addressed, so a tag moved
// since changes nothing of them).
func (f *Fetcher) ociOrigin(ref model.Ref, creds *model.Credentials, m *model.Manifest) (origin, error) {
	d := m.SourceRevision
	if !manifestDigestRE.MatchString(d) {
		return nil, fmt.Errorf("fetch %s: the manifest names no OCI manifest digest to read (%q); list the model again", ref, d)
	}
	om, base, err := f.ociModel(ref, creds, d)
	if err != nil {
		return nil, err
	}
	return srcOrigin{src: om, base: "oci://" + ref.Registry + "/" + ref.Repo + "@" + d, ingestBase: base}, nil
}

// checkOCIAccess asks the registry whether the login may read the model:
// the manifest (a pull of the repository), and the first byte of one
// blob, in case the registry authorizes blobs apart.
func (f *Fetcher) checkOCIAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error {
	m, _, err := f.ociModel(ref, creds, ref.At)
	if err != nil {
		return err
	}
	return f.checkSourceAccess(ctx, m, func(rev string) string { return "oci://" + ref.Registry + "/" + ref.Repo + "@" + rev })
}

// validateOCI checks an OCI source: a registry, and a login given once.
func (s Source) validateOCI() error {
	if s.Endpoint != "" || s.Region != "" || s.PathStyle || s.hasKeyID() || s.hasSecret() || s.Anonymous || s.Token != "" || s.TokenFile != "" {
		return errors.New("a source of type: oci takes registry, plainHTTP, username with password or passwordFile, and namespaces; endpoint, region, pathStyle, keys, anonymous and tokens are other types'")
	}
	r, err := model.ParseRef("oci://" + s.Registry + "/x")
	if s.Registry == "" || err != nil || r.Registry != s.Registry {
		return fmt.Errorf("registry %q: want HOST[:PORT] in lowercase, as oci:// refs name it", s.Registry)
	}
	switch {
	case s.Password != "" && s.PasswordFile != "":
		return errors.New("both password and passwordFile are set; use one")
	case (s.Username == "") != (s.Password == "" && s.PasswordFile == ""):
		return errors.New("a username needs a password (or passwordFile) and the other way round")
	}
	return nil
}

// ociPassword is the source's registry password, read from its file each
// time so a rotated Secret takes effect.
func (s Source) ociPassword() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read passwordFile: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("passwordFile %s is empty", s.PasswordFile)
	}
	return pw, nil
}

// kind names the source's type for messages.
func (s Source) kind() string {
	switch s.Type {
	case SourceHub:
		return "a Hub source (type: hf)"
	case SourceOCI:
		return "an OCI registry source (type: oci)"
	case SourceGCS:
		return "a GCS source (type: gcs)"
	}
	return "an S3 source"
}
