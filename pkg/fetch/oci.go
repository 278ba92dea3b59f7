package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// reads over HTTPS from a registry the operator allowed (endpoints: in
// the sources file); plain HTTP only through a source that says so, and a
// source's login goes to its own registry only.
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
	if !named && !f.endpoints["https://"+ref.Registry] {
		// The registry is the tenant's to write: without this any pod could
		// make the agent connect wherever it likes (an address inside the
		// cluster) from the node's network.
		return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list",
			Msg: fmt.Sprintf("registry %s is not allowed: the operator lists the registries an oci:// ref may name without a source under endpoints: in the agent's sources file, as https://%s (%s); or use a named source", ref.Registry, ref.Registry, endpointNames(f.endpoints))}
	}
	o := oci.Options{Registry: ref.Registry, HTTPClient: f.hubHTTP(), MaxFiles: f.maxFiles, UserAgent: "modelcache"}
	if named {
		if src.Type != SourceOCI {
			return nil, "", invalid("source %q is %s; an oci:// ref needs a source of type: oci", ref.Source, src.kind())
		}
		if src.Registry != ref.Registry {
			return nil, "", invalid("registry %s is not source %q's registry %s: a source's login goes to its own registry only", ref.Registry, ref.Source, src.Registry)
		}
		l, err := src.ociLogin()
		if err != nil {
			return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: fmt.Sprintf("source %q: %v", ref.Source, err)}
		}
		o.PlainHTTP, o.Username, o.Password, o.IdentityToken = src.PlainHTTP, l.Username, l.Password, l.IdentityToken
	}
	if creds != nil {
		l, err := volumeOCILogin(*creds, ref.Registry)
		switch {
		case errors.Is(err, oci.ErrNoLogin):
			return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: err.Error()}
		case err != nil:
			return nil, "", invalid("%v", err)
		}
		o.Username, o.Password, o.IdentityToken = l.Username, l.Password, l.IdentityToken
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

// volumeOCILogin is the registry login a volume's Secret brings: a docker
// config (a kubernetes.io/dockerconfigjson Secret, the kind image pulls
// use) with an entry for the registry, or a username and password under
// the keys accessKeyID and secretAccessKey. A Secret with anything else
// (a Hub token, an S3 session token) is refused rather than ignored. A
// docker config without the registry is oci.ErrNoLogin: the volume brought
// no login that may read the model.
func volumeOCILogin(c model.Credentials, registry string) (oci.Login, error) {
	other := c.Token != "" || c.SessionToken != "" || c.AccountKey != "" || c.SASToken != ""
	switch {
	case c.DockerConfig != "" && !other && c.AccessKeyID == "" && c.SecretAccessKey == "":
		l, err := oci.DockerConfigLogin([]byte(c.DockerConfig), registry)
		if err != nil {
			return oci.Login{}, fmt.Errorf("the volume's secret: %w", err)
		}
		return l, nil
	case c.DockerConfig == "" && !other && c.AccessKeyID != "" && c.SecretAccessKey != "":
		return oci.Login{Username: c.AccessKeyID, Password: c.SecretAccessKey}, nil
	}
	return oci.Login{}, errors.New("an oci:// volume's secret needs a docker config (.dockerconfigjson, as for image pulls) or a registry username and password under the keys accessKeyID and secretAccessKey, and nothing else")
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
		return errors.New("a source of type: oci takes registry, plainHTTP, username with password or passwordFile (or dockerConfigFile), and namespaces; endpoint, region, pathStyle, keys, anonymous and tokens are other types'")
	}
	r, err := model.ParseRef("oci://" + s.Registry + "/x")
	if s.Registry == "" || err != nil || r.Registry != s.Registry {
		return fmt.Errorf("registry %q: want HOST[:PORT] in lowercase, as oci:// refs name it", s.Registry)
	}
	switch {
	case s.DockerConfigFile != "" && (s.Username != "" || s.Password != "" || s.PasswordFile != ""):
		return errors.New("dockerConfigFile holds the login: set no username, password or passwordFile beside it")
	case s.Password != "" && s.PasswordFile != "":
		return errors.New("both password and passwordFile are set; use one")
	case (s.Username == "") != (s.Password == "" && s.PasswordFile == ""):
		return errors.New("a username needs a password (or passwordFile) and the other way round")
	}
	return nil
}

// ociLogin is the source's registry login, its files read each time so a
// rotated Secret takes effect.
func (s Source) ociLogin() (oci.Login, error) {
	if s.DockerConfigFile != "" {
		b, err := readBounded(s.DockerConfigFile, oci.MaxDockerConfigBytes)
		if err != nil {
			return oci.Login{}, fmt.Errorf("read dockerConfigFile: %w", err)
		}
		return oci.DockerConfigLogin(b, s.Registry)
	}
	pw, err := s.ociPassword()
	return oci.Login{Username: s.Username, Password: pw}, err
}

// readBounded reads a file of at most max bytes (a mounted Secret's key).
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is over %d bytes", path, max)
	}
	return b, nil
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
	case SourceAzure:
		return "an Azure Blob Storage source (type: azure)"
	case SourceGCS:
		return "a GCS source (type: gcs)"
	}
	return "an S3 source"
}
