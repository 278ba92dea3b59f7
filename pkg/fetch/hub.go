package fetch

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/hf"
)

// hubModel is the Hub model ref names, at revision (a branch, tag or
// commit; "" is main), with the token that may read it: the volume's
// (creds), else its named source's, else none. The endpoint is the
// source's, the ref's (which the operator must allow, and which never gets
// a source's token) or the public Hub.
func (f *Fetcher) hubModel(ref model.Ref, creds *model.Credentials, revision string) (*hf.Model, string, error) {
	where := "hf://" + ref.Repo
	src, named := f.sources[ref.Source]
	if ref.Source != "" && !named {
		return nil, "", &source.Error{Class: ErrUnknownSource, Where: where, Op: "list",
			Msg: fmt.Sprintf("source %q is not in the agent's sources file (%s)", ref.Source, sourceNames(f.sources))}
	}
	endpoint, token := hf.DefaultEndpoint, ""
	switch {
	case named:
		if src.Type != SourceHub {
			return nil, "", &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list",
				Msg: fmt.Sprintf("source %q is %s; an hf:// ref needs a source of type: hf", ref.Source, src.kind())}
		}
		if ref.Endpoint != "" && ref.Endpoint != src.Endpoint {
			return nil, "", &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list",
				Msg: fmt.Sprintf("endpoint %s differs from source %q's endpoint %q; drop one of them", ref.Endpoint, ref.Source, src.Endpoint)}
		}
		if src.Endpoint != "" {
			endpoint = src.Endpoint
		}
		t, err := src.hubToken()
		if err != nil {
			return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: fmt.Sprintf("source %q: %v", ref.Source, err)}
		}
		token = t
	case ref.Endpoint != "":
		if !f.endpoints[ref.Endpoint] {
			return nil, "", &source.Error{Class: ErrAccessDenied, Where: where, Op: "list",
				Msg: fmt.Sprintf("endpoint %s is not allowed: the operator lists the endpoints refs may name under endpoints: in the agent's sources file (%s); or use a named source", ref.Endpoint, endpointNames(f.endpoints))}
		}
		endpoint = ref.Endpoint
	}
	if creds != nil {
		if creds.Token == "" {
			return nil, "", &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list",
				Msg: "the volume's secret has S3 keys but no Hub token (key \"token\" or HF_TOKEN)"}
		}
		token = creds.Token
	}
	c, err := hf.New(hf.Options{Endpoint: endpoint, Token: token, HTTPClient: f.hubHTTP(),
		MaxFiles: f.maxFiles, MaxPages: f.maxPages, UserAgent: "modelcache"})
	if err != nil {
		return nil, "", err
	}
	return c.Model(ref.Repo, revision), endpoint, nil
}

// hubHTTP shares the S3 client's tuned transport (pooled connections, no
// transparent gzip, no HTTP/2, the stall timeout for headers) with the
// Hub's and the registries' clients.
func (f *Fetcher) hubHTTP() *http.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hub == nil {
		switch c := f.http.(type) {
		case *http.Client:
			f.hub = c
		case *awshttp.BuildableClient:
			f.hub = &http.Client{Transport: c.GetTransport()}
		default:
			f.hub = &http.Client{}
		}
	}
	return f.hub
}

// listHub lists a Hub model: its revision resolved to a commit, which the
// manifest keeps (SourceRevision) so the download reads that commit.
func (f *Fetcher) listHub(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error) {
	m, _, err := f.hubModel(ref, creds, ref.At)
	if err != nil {
		return nil, err
	}
	return f.listSource(ctx, ref, m)
}

// listSource lists a source.Source into the manifest of ref: filtered by
// its patterns, with the source's revision (SourceRevision) for the
// download to read.
func (f *Fetcher) listSource(ctx context.Context, ref model.Ref, m source.Source) (*model.Manifest, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.listTimeout, errListTimeout)
	defer cancel()
	l, err := m.List(ctx)
	if err != nil {
		if context.Cause(ctx) == errListTimeout {
			return nil, &source.Error{Class: ErrLimit, Where: ref.String(), Op: "list",
				Msg: fmt.Sprintf("listing took longer than %s (--list-timeout)", f.listTimeout)}
		}
		return nil, err
	}
	files, err := filterFiles(ref, l.Files)
	if err != nil {
		return nil, err
	}
	man, err := model.NewManifest(ref, files)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", ref, err)
	}
	man.SourceRevision = l.Revision
	return man, nil
}

// filterFiles keeps the files ref's include and exclude patterns select;
// none left is ErrNotFound, as an empty prefix is.
func filterFiles(ref model.Ref, files []model.File) ([]model.File, error) {
	flt, err := ref.Filter()
	if err != nil {
		return nil, err
	}
	if flt.Empty() {
		return files, nil
	}
	kept := files[:0:0]
	for _, fl := range files {
		if flt.Keep(fl.Path) {
			kept = append(kept, fl)
		}
	}
	if len(kept) == 0 {
		return nil, &source.Error{Class: ErrNotFound, Where: ref.String(), Op: "list",
			Msg: fmt.Sprintf("none of its %d files is selected by %s", len(files), flt)}
	}
	return kept, nil
}

// hubOrigin is where Fetch reads a Hub model: the commit its manifest was
// listed at, never what the branch names now.
func (f *Fetcher) hubOrigin(ref model.Ref, creds *model.Credentials, m *model.Manifest) (origin, error) {
	commit := m.SourceRevision
	if len(commit) != 40 || strings.Trim(commit, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("fetch %s: the manifest names no commit to read (%q); list the model again", ref, commit)
	}
	hm, endpoint, err := f.hubModel(ref, creds, commit)
	if err != nil {
		return nil, err
	}
	return srcOrigin{src: hm, base: "hf://" + ref.Repo + "@" + commit, ingestBase: endpoint + "/" + ref.Repo}, nil
}

// checkHubAccess asks the Hub whether the token may read the model: a
// listing (repo metadata is public even for gated repos) and the first
// byte of one file, which the Hub authorizes for the whole repo.
func (f *Fetcher) checkHubAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error {
	m, _, err := f.hubModel(ref, creds, ref.At)
	if err != nil {
		return err
	}
	return f.checkSourceAccess(ctx, m, func(rev string) string { return "hf://" + ref.Repo + "@" + rev })
}

// checkSourceAccess lists m and reads the first byte of its first
// non-empty file; base names the listed revision in messages.
func (f *Fetcher) checkSourceAccess(ctx context.Context, m source.Source, base func(revision string) string) error {
	l, err := m.List(ctx)
	if err != nil {
		return err
	}
	for _, fl := range l.Files {
		if fl.Size == 0 {
			continue
		}
		o := srcOrigin{src: m, base: base(l.Revision)}
		return f.retry(ctx, o, fl.Path, func() error {
			r, err := m.Open(ctx, fl, 0, 1)
			if err != nil {
				return err
			}
			return r.Close()
		}, nil, nil)
	}
	return nil
}

// hubToken is the source's Hub token, read from its file each time so a
// rotated Secret takes effect.
func (s Source) hubToken() (string, error) {
	if s.TokenFile == "" {
		return s.Token, nil
	}
	b, err := os.ReadFile(s.TokenFile)
	if err != nil {
		return "", fmt.Errorf("read tokenFile: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
