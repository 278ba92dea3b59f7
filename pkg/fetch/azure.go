package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/az"
)

// SourceAzure is the type of a source for az:// refs.
const SourceAzure = "azure"

// azureModel is the Azure container prefix ref names, with the credential
// that may read it: the volume's (creds: an account key or a SAS token),
// else its named source's, else none (a public container). The endpoint is
// the source's, the ref's (which the operator must allow, and which never
// gets a source's credential) or Azure's public cloud. A source's
// credential goes to its own account at its own endpoint only.
func (f *Fetcher) azureModel(ref model.Ref, creds *model.Credentials) (*az.Model, error) {
	where := ref.Location().String()
	invalid := func(format string, a ...any) error {
		return &source.Error{Class: model.ErrInvalidRef, Where: where, Op: "list", Msg: fmt.Sprintf(format, a...)}
	}
	src, named := f.sources[ref.Source]
	if ref.Source != "" && !named {
		return nil, &source.Error{Class: ErrUnknownSource, Where: where, Op: "list",
			Msg: fmt.Sprintf("source %q is not in the agent's sources file (%s)", ref.Source, sourceNames(f.sources))}
	}
	o := az.Options{Account: ref.Account, HTTPClient: f.hubHTTP(), MaxFiles: f.maxFiles, MaxPages: f.maxPages}
	switch {
	case named:
		if src.Type != SourceAzure {
			return nil, invalid("source %q is %s; an az:// ref needs a source of type: azure", ref.Source, src.kind())
		}
		if ref.Endpoint != "" && ref.Endpoint != model.AzureEndpoint(src.Account, src.Endpoint) {
			return nil, invalid("endpoint %s differs from source %q's endpoint %q; drop one of them", ref.Endpoint, ref.Source, src.Endpoint)
		}
		if src.Account != "" && src.Account != ref.Account {
			return nil, invalid("account %s is not source %q's account %s: a source's credentials go to its own account only", ref.Account, ref.Source, src.Account)
		}
		o.Endpoint = model.AzureEndpoint(src.Account, src.Endpoint)
		if creds == nil {
			if err := f.azureSourceCredential(src, &o); err != nil {
				return nil, &source.Error{Class: ErrAccessDenied, Where: where, Op: "list", Msg: fmt.Sprintf("source %q: %v", ref.Source, err)}
			}
		}
	case ref.Endpoint != "":
		if !f.endpoints[ref.Endpoint] {
			return nil, &source.Error{Class: ErrAccessDenied, Where: where, Op: "list",
				Msg: fmt.Sprintf("endpoint %s is not allowed: the operator lists the endpoints refs may name under endpoints: in the agent's sources file (%s); or use a named source", ref.Endpoint, endpointNames(f.endpoints))}
		}
		o.Endpoint = ref.Endpoint
	}
	if creds != nil {
		if err := creds.Validate(); err != nil || (creds.AccountKey == "" && creds.SASToken == "") {
			return nil, invalid("an az:// volume's secret needs an Azure account key (key accountKey or AZURE_STORAGE_KEY) or a SAS token (sasToken or AZURE_STORAGE_SAS_TOKEN), one of them")
		}
		o.AccountKey, o.SASToken = creds.AccountKey, creds.SASToken
	}
	c, err := az.New(o)
	if err != nil {
		return nil, invalid("%v", err)
	}
	return c.Model(ref.Bucket, ref.Prefix), nil
}

// azureSourceCredential sets o's credential from the source: its key or
// SAS token (read from their files each time, so a rotated Secret takes
// effect), nothing (anonymous), or else the agent's Entra ID identity.
func (f *Fetcher) azureSourceCredential(s Source, o *az.Options) error {
	switch {
	case s.Anonymous:
		return nil
	case s.AccountKey != "" || s.AccountKeyFile != "":
		k, err := readSecret(s.AccountKey, s.AccountKeyFile, "accountKeyFile")
		o.AccountKey = k
		return err
	case s.SASToken != "" || s.SASTokenFile != "":
		t, err := readSecret(s.SASToken, s.SASTokenFile, "sasTokenFile")
		o.SASToken = t
		return err
	}
	cred, err := f.azureIdentity()
	o.Credential = cred
	return err
}

// readSecret is value, or the trimmed content of file when set.
func readSecret(value, file, what string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", what, file)
	}
	return v, nil
}

// azureIdentity is the agent's own Entra ID identity, built on first use:
// workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID and
// AZURE_FEDERATED_TOKEN_FILE, which AKS's webhook sets), else the node's
// managed identity. Never the Azure CLI or a browser login.
func (f *Fetcher) azureIdentity() (azcore.TokenCredential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.azIdentity != nil {
		return f.azIdentity, nil
	}
	opts := azcore.ClientOptions{Transport: f.hubHTTP()}
	var chain []azcore.TokenCredential
	if os.Getenv("AZURE_FEDERATED_TOKEN_FILE") != "" {
		wi, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: opts})
		if err != nil {
			return nil, fmt.Errorf("workload identity: %w", err)
		}
		chain = append(chain, wi)
	}
	mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("managed identity: %w", err)
	}
	chain = append(chain, mi)
	c, err := azidentity.NewChainedTokenCredential(chain, nil)
	if err != nil {
		return nil, err
	}
	f.azIdentity = c
	return c, nil
}

// listAzure lists an Azure container prefix. Blobs have no revision of
// the listing: each file's ETag is its version, which the download reads.
func (f *Fetcher) listAzure(ctx context.Context, ref model.Ref, creds *model.Credentials) (*model.Manifest, error) {
	m, err := f.azureModel(ref, creds)
	if err != nil {
		return nil, err
	}
	return f.listSource(ctx, ref, m)
}

// azureOrigin is where Fetch reads an Azure model: each blob at the ETag
// it was listed with (If-Match), so a blob overwritten since fails with
// ErrChanged.
func (f *Fetcher) azureOrigin(ref model.Ref, creds *model.Credentials) (origin, error) {
	m, err := f.azureModel(ref, creds)
	if err != nil {
		return nil, err
	}
	return srcOrigin{src: m, base: m.Where(), ingestBase: m.Service() + "/" + ref.Bucket + "/" + ref.Prefix}, nil
}

// checkAzureAccess asks the service whether the credentials may read the
// whole model: the listing, then the properties of every selected blob (as
// CheckAccess does with S3): a SAS or a role assignment may be scoped
// below the container, and a cache hit must not hand a volume a file its
// credentials could not have read.
func (f *Fetcher) checkAzureAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error {
	m, err := f.azureModel(ref, creds)
	if err != nil {
		return err
	}
	man, err := f.listSource(ctx, ref, m)
	if err != nil {
		return err
	}
	o := srcOrigin{src: m, base: m.Where()}
	return each(ctx, accessHeads, len(man.Files), func(ctx context.Context, i int) error {
		fl := man.Files[i]
		return f.retry(ctx, o, fl.Path, func() error { return m.Check(ctx, fl) }, nil, nil)
	})
}

// validateAzure checks an Azure source: an endpoint (or none, the public
// cloud), an account, and a credential given once.
func (s Source) validateAzure() error {
	if s.Region != "" || s.PathStyle || s.hasKeyID() || s.hasSecret() || s.Token != "" || s.TokenFile != "" {
		return errors.New("a source of type: azure takes endpoint, account, accountKey or accountKeyFile, sasToken or sasTokenFile, anonymous, and namespaces; region, pathStyle, S3 keys and tokens are other types'")
	}
	if s.Endpoint != "" {
		var r model.Ref
		if err := r.SetOption("endpoint", model.AzureEndpoint(s.Account, s.Endpoint)); err != nil {
			return err
		}
	}
	if s.Account != "" {
		if _, err := model.ParseRef("az://" + s.Account + "/xxx"); err != nil {
			return fmt.Errorf("account %q: want 3-24 lowercase letters and digits", s.Account)
		}
	}
	n := 0
	for _, set := range []bool{s.AccountKey != "" || s.AccountKeyFile != "", s.SASToken != "" || s.SASTokenFile != "", s.Anonymous} {
		if set {
			n++
		}
	}
	switch {
	case s.AccountKey != "" && s.AccountKeyFile != "":
		return errors.New("both accountKey and accountKeyFile are set; use one")
	case s.SASToken != "" && s.SASTokenFile != "":
		return errors.New("both sasToken and sasTokenFile are set; use one")
	case n > 1:
		return errors.New("give one of accountKey(File), sasToken(File) and anonymous (none: the agent's Entra ID identity)")
	case n == 1 && !s.Anonymous && s.Account == "":
		return errors.New("an account key or SAS token belongs to one storage account: set account")
	}
	return nil
}

// hasAzure says whether any Azure-only field is set.
func (s Source) hasAzure() bool {
	return s.Account != "" || s.AccountKey != "" || s.AccountKeyFile != "" || s.SASToken != "" || s.SASTokenFile != ""
}

// azureCredentialsKind describes an Azure source's credential, without it.
func (s Source) azureCredentialsKind() string {
	switch {
	case s.Anonymous:
		return "anonymous"
	case s.AccountKeyFile != "":
		return "account key from " + s.AccountKeyFile
	case s.AccountKey != "":
		return "static account key"
	case s.SASTokenFile != "":
		return "SAS token from " + s.SASTokenFile
	case s.SASToken != "":
		return "static SAS token"
	}
	return "Entra ID (workload or managed identity)"
}

// azureString shows an Azure source without secrets.
func (s Source) azureString() string {
	ep := s.Endpoint
	if ep == "" {
		ep = "https://ACCOUNT.blob.core.windows.net"
	}
	acct := s.Account
	if acct == "" {
		acct = "any"
	}
	return fmt.Sprintf("{type: azure, endpoint: %s, account: %s, credentials: %s}", ep, acct, s.azureCredentialsKind())
}
