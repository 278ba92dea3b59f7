package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/oauth2"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/gcs"
)

// gcsModel is the gs:// prefix ref names, with the token source that may
// read it: the volume's service account key (creds), else its named
// source's credentials (anonymous, a key file, or Application Default
// Credentials), else, for a ref without source or endpoint, the agent's
// Application Default Credentials (workload identity). A ref's own
// endpoint (which the operator must allow) gets no credentials of the
// agent's, only a volume's key; a source's go to its own endpoint only.
// endpoint is where the model is read from, for ingest keys.
func (f *Fetcher) gcsModel(ctx context.Context, ref model.Ref, creds *model.Credentials) (m *gcs.Model, endpoint string, err error) {
	where := gcsWhere(ref)
	invalid := func(format string, a ...any) error {
		return &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list", Msg: fmt.Sprintf(format, a...)}
	}
	denied := func(format string, a ...any) error {
		return &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: fmt.Sprintf(format, a...)}
	}
	if ref.Region != "" {
		return nil, "", invalid("region is not an option of a gs:// ref")
	}
	src, named := f.sources[ref.Source]
	if ref.Source != "" && !named {
		return nil, "", &source.Error{Class: ErrUnknownSource, Where: where, Op: "list",
			Msg: fmt.Sprintf("source %q is not in the agent's sources file (%s)", ref.Source, sourceNames(f.sources))}
	}
	endpoint = gcs.DefaultEndpoint
	var ts oauth2.TokenSource
	switch {
	case named:
		if src.Type != SourceGCS {
			return nil, "", invalid("source %q is %s; a gs:// ref needs a source of type: gcs", ref.Source, src.kind())
		}
		if ref.Endpoint != "" && ref.Endpoint != src.Endpoint {
			return nil, "", invalid("endpoint %s differs from source %q's endpoint %q; drop one of them", ref.Endpoint, ref.Source, src.Endpoint)
		}
		if src.Endpoint != "" {
			endpoint = src.Endpoint
		}
		if creds == nil {
			if ts, err = f.gcsSourceTokens(ctx, src); err != nil {
				return nil, "", denied("source %q: %v", ref.Source, err)
			}
		}
	case ref.Endpoint != "":
		if !f.endpoints[ref.Endpoint] {
			return nil, "", denied("endpoint %s is not allowed: the operator lists the endpoints refs may name under endpoints: in the agent's sources file (%s); or use a named source", ref.Endpoint, endpointNames(f.endpoints))
		}
		// The agent's identity goes only where the operator configured
		// it: a source, or GCS itself. Here: anonymous, or the volume's key.
		endpoint = ref.Endpoint
	case creds == nil:
		if ts, err = f.gcsDefaultTokens(ctx); err != nil {
			return nil, "", denied("%v; for a public bucket, name a source of type: gcs with anonymous: true", err)
		}
	}
	if creds != nil {
		if creds.ServiceAccountKey == "" || creds.AccessKeyID != "" || creds.SecretAccessKey != "" || creds.SessionToken != "" || creds.Token != "" {
			return nil, "", invalid("a gs:// volume's secret needs a service account's JSON key under the key serviceAccountKey (or key.json), and no S3 keys or Hub token")
		}
		if ts, err = gcs.ServiceAccountTokenSource([]byte(creds.ServiceAccountKey)); err != nil {
			return nil, "", invalid("the volume's secret: %v", err)
		}
	}
	c, err := gcs.New(gcs.Options{Endpoint: endpoint, TokenSource: ts, HTTPClient: f.hubHTTP(),
		MaxFiles: f.maxFiles, MaxPages: f.maxPages, UserAgent: "modelcache"})
	if err != nil {
		return nil, "", invalid("%v", err)
	}
	return c.Model(ref.Bucket, ref.Prefix), endpoint, nil
}

// gcsSourceTokens is a named source's token source: none (anonymous), its
// key file's (read again for every model, so a rotated Secret takes
// effect), or Application Default Credentials.
func (f *Fetcher) gcsSourceTokens(ctx context.Context, s Source) (oauth2.TokenSource, error) {
	switch {
	case s.Anonymous:
		return nil, nil
	case s.CredentialsFile != "":
		return s.gcsKeyTokens()
	}
	return f.gcsDefaultTokens(ctx)
}

// gcsKeyTokens reads the source's service account key file.
func (s Source) gcsKeyTokens() (oauth2.TokenSource, error) {
	b, err := os.ReadFile(s.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("read credentialsFile: %w", err)
	}
	ts, err := gcs.ServiceAccountTokenSource(b)
	if err != nil {
		return nil, fmt.Errorf("credentialsFile %s: %w", s.CredentialsFile, err)
	}
	return ts, nil
}

// gcsDefaultTokens is the agent's Application Default Credentials, found
// on first use and kept (their token source refreshes itself); a failure
// is tried again next time.
func (f *Fetcher) gcsDefaultTokens(ctx context.Context) (oauth2.TokenSource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gcsADC == nil {
		ts, err := gcs.DefaultTokenSource(ctx)
		if err != nil {
			return nil, err
		}
		f.gcsADC = ts
	}
	return f.gcsADC, nil
}

func gcsWhere(ref model.Ref) string {
	if ref.Prefix == "" {
		return "gs://" + ref.Bucket
	}
	return "gs://" + ref.Bucket + "/" + ref.Prefix
}

// listGCS lists a gs:// prefix: every object under it, each pinned to its
// generation for the download.
func (f *Fetcher) listGCS(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error) {
	m, _, err := f.gcsModel(ctx, ref, creds)
	if err != nil {
		return nil, err
	}
	return f.listSource(ctx, ref, m)
}

// gcsOrigin is where Fetch reads a gs:// model: each file at the
// generation its manifest lists.
func (f *Fetcher) gcsOrigin(ctx context.Context, ref model.Ref, creds *model.Credentials) (origin, error) {
	m, endpoint, err := f.gcsModel(ctx, ref, creds)
	if err != nil {
		return nil, err
	}
	ingest := "gs:" + endpoint + "/" + ref.Bucket
	if ref.Prefix != "" {
		ingest += "/" + ref.Prefix
	}
	return srcOrigin{src: m, base: gcsWhere(ref), ingestBase: ingest}, nil
}

// checkGCSAccess asks GCS whether the credentials may read the whole
// model: the listing, then the metadata of every object at its listed
// generation (storage.objects.get, the permission a read needs). Every
// object, not one: with fine-grained ACLs a bucket may deny some, and a
// cache hit must not hand a volume a file its key could not have fetched.
func (f *Fetcher) checkGCSAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error {
	m, _, err := f.gcsModel(ctx, ref, creds)
	if err != nil {
		return err
	}
	man, err := f.listSource(ctx, ref, m) // bounded by --list-timeout, filtered
	if err != nil {
		return err
	}
	files := man.Files
	o := srcOrigin{src: m, base: gcsWhere(ref)}
	return each(ctx, accessHeads, len(files), func(ctx context.Context, i int) error {
		fl := files[i]
		return f.retry(ctx, o, fl.Path, func() error { return m.Stat(ctx, fl) }, nil, nil)
	})
}

// validateGCS checks a GCS source: an endpoint, and credentials given one
// way at most.
func (s Source) validateGCS() error {
	if s.Region != "" || s.PathStyle || s.hasKeyID() || s.hasSecret() || s.Token != "" || s.TokenFile != "" {
		return errors.New("a source of type: gcs takes endpoint, credentialsFile or anonymous, and namespaces; region, pathStyle, keys and tokens are other types'")
	}
	if s.Anonymous && s.CredentialsFile != "" {
		return errors.New("anonymous is set together with credentialsFile; use one")
	}
	if s.Endpoint != "" {
		var r model.Ref
		if err := r.SetOption("endpoint", s.Endpoint); err != nil {
			return err
		}
	}
	return nil
}
