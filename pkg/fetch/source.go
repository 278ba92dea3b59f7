package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.yaml.in/yaml/v3"

	"github.com/modelcache/modelcache/pkg/model"
)

// Source is a named place to read models from: an endpoint and the
// credentials for it. A ref selects one with ?source=NAME. Its String,
// GoString and LogValue never show secrets, so a Source can be logged.
type Source struct {
	// Type is SourceS3 ("" too), SourceHub (hf:// refs), SourceOCI
	// (oci:// refs), SourceAzure (az:// refs) or SourceGCS (gs:// refs).
	Type string
	// Endpoint of an S3-compatible server (http(s)://HOST[:PORT]); empty
	// means AWS S3. For a Hub source, a mirror of the Hub's API
	// (HF_ENDPOINT); empty means https://huggingface.co. For a GCS source,
	// an emulator or mirror of its JSON API; empty means
	// https://storage.googleapis.com.
	Endpoint string
	// Region of the buckets; empty means the ref's region or us-east-1.
	Region string
	// PathStyle puts the bucket in the path (http://host/bucket/key), which
	// most S3-compatible servers need, instead of the host name.
	PathStyle bool
	// Static credentials. Either value may instead come from a file (below).
	AccessKeyID     string
	SecretAccessKey string
	// Files holding the key ID and the secret, e.g. keys of a mounted
	// Kubernetes Secret. They are re-read every few minutes, so a rotated
	// Secret takes effect without a restart.
	AccessKeyIDFile     string
	SecretAccessKeyFile string
	// Anonymous sends unsigned requests (public buckets).
	Anonymous bool
	// CredentialsFile is a GCS source's service account JSON key (a
	// mounted Secret), read again for every listing. Neither it nor
	// Anonymous: Application Default Credentials (workload identity).
	CredentialsFile string
	// Token (HF_TOKEN) or TokenFile: a Hub source's access token for
	// private and gated repos; the file is read again for every listing.
	Token, TokenFile string
	// Registry is an OCI source's HOST[:PORT]: the only registry its
	// credentials go to, and that oci:// refs naming the source must name.
	Registry string
	// Username and Password (or PasswordFile, read again for every
	// listing): an OCI source's registry login, for its basic auth or its
	// token service. Neither: anonymous.
	Username, Password, PasswordFile string
	// DockerConfigFile, instead of a username: a docker config (the
	// .dockerconfigjson key of a mounted kubernetes.io/dockerconfigjson
	// Secret), read again for every listing; its entry for Registry is
	// the login.
	DockerConfigFile string
	// PlainHTTP talks http:// to an OCI source's registry (one inside the
	// cluster without TLS); refs without a source always use HTTPS.
	PlainHTTP bool
	// Account (an Azure source's storage account; empty: any the ref
	// names, for an anonymous or Entra ID source), AccountKey or
	// AccountKeyFile (its shared key), SASToken or SASTokenFile (a shared
	// access signature): see azure.go. Files are read again for every
	// listing.
	Account, AccountKey, AccountKeyFile, SASToken, SASTokenFile string
	// Namespaces, if set, are the only namespaces whose volumes may use the
	// source (and so the agent's credentials for it). Empty: every namespace.
	Namespaces []string
}

// Source types.
const (
	SourceS3  = "s3"
	SourceHub = "hf"
	SourceOCI = "oci"
	SourceGCS = "gcs"
)

// credentialReload is how long credentials read from files are trusted
// before the files are read again.
const credentialReload = 5 * time.Minute

// Validate checks the endpoint and region and that credentials are given
// exactly one way.
func (s Source) Validate() error {
	if s.Type == SourceAzure {
		return s.validateAzure()
	}
	if s.hasAzure() {
		return errors.New("account, accountKey, accountKeyFile, sasToken and sasTokenFile are for sources of type: azure")
	}
	if s.Type != SourceGCS && s.CredentialsFile != "" {
		return errors.New("credentialsFile is for sources of type: gcs")
	}
	if s.Type != SourceOCI && (s.Registry != "" || s.Username != "" || s.Password != "" || s.PasswordFile != "" || s.DockerConfigFile != "" || s.PlainHTTP) {
		return errors.New("registry, username, password, passwordFile, dockerConfigFile and plainHTTP are for sources of type: oci")
	}
	switch s.Type {
	case "", SourceS3:
		if s.Token != "" || s.TokenFile != "" {
			return errors.New("token and tokenFile are for sources of type: hf")
		}
	case SourceHub:
		if s.Region != "" || s.PathStyle || s.hasKeyID() || s.hasSecret() || s.Anonymous {
			return errors.New("a source of type: hf takes endpoint, token or tokenFile, and namespaces; region, pathStyle, keys and anonymous are S3's")
		}
		if s.Token != "" && s.TokenFile != "" {
			return errors.New("both token and tokenFile are set; use one")
		}
	case SourceOCI:
		return s.validateOCI()
	case SourceGCS:
		return s.validateGCS()
	default:
		return fmt.Errorf("type %q: want s3, hf, oci, azure or gcs", s.Type)
	}
	var r model.Ref
	if s.Endpoint != "" {
		if err := r.SetOption("endpoint", s.Endpoint); err != nil {
			return err
		}
	}
	if s.Region != "" {
		if err := r.SetOption("region", s.Region); err != nil {
			return err
		}
	}
	switch {
	case s.AccessKeyID != "" && s.AccessKeyIDFile != "":
		return errors.New("both accessKeyID and accessKeyIDFile are set; use one")
	case s.SecretAccessKey != "" && s.SecretAccessKeyFile != "":
		return errors.New("both secretAccessKey and secretAccessKeyFile are set; use one")
	case s.hasKeyID() != s.hasSecret():
		return errors.New("an access key ID needs a secret access key and the other way round")
	case s.Anonymous && s.hasKeyID():
		return errors.New("anonymous is set together with credentials; use one")
	}
	return nil
}

func (s Source) hasKeyID() bool  { return s.AccessKeyID != "" || s.AccessKeyIDFile != "" }
func (s Source) hasSecret() bool { return s.SecretAccessKey != "" || s.SecretAccessKeyFile != "" }

// credentialsKind describes where credentials come from, without them.
func (s Source) credentialsKind() string {
	switch {
	case s.Type == SourceOCI && s.DockerConfigFile != "":
		return "login from docker config " + s.DockerConfigFile
	case s.Type == SourceOCI && s.PasswordFile != "":
		return fmt.Sprintf("user %q, password from %s", s.Username, s.PasswordFile)
	case s.Type == SourceOCI && s.Username != "":
		return fmt.Sprintf("user %q, static password", s.Username)
	case s.Type == SourceOCI:
		return "anonymous"
	case s.Type == SourceHub && s.TokenFile != "":
		return "token from " + s.TokenFile
	case s.Type == SourceHub && s.Token != "":
		return "static token"
	case s.Type == SourceHub:
		return "no token"
	case s.Type == SourceGCS && s.CredentialsFile != "":
		return "service account key from " + s.CredentialsFile
	case s.Type == SourceGCS && !s.Anonymous:
		return "Application Default Credentials"
	case s.Anonymous:
		return "anonymous"
	case s.AccessKeyIDFile != "" || s.SecretAccessKeyFile != "":
		files := []string{}
		for _, f := range []string{s.AccessKeyIDFile, s.SecretAccessKeyFile} {
			if f != "" {
				files = append(files, f)
			}
		}
		return "keys from " + strings.Join(files, ", ")
	case s.hasKeyID():
		return "static keys"
	}
	return "AWS default credential chain"
}

// String shows the source without secrets.
func (s Source) String() string {
	if s.Type == SourceAzure {
		return s.azureString()
	}
	ep := s.Endpoint
	if ep == "" {
		ep = "AWS S3"
	}
	if s.Type == SourceHub {
		if ep = s.Endpoint; ep == "" {
			ep = "https://huggingface.co"
		}
		return fmt.Sprintf("{type: hf, endpoint: %s, credentials: %s}", ep, s.credentialsKind())
	}
	if s.Type == SourceGCS {
		if ep = s.Endpoint; ep == "" {
			ep = "https://storage.googleapis.com"
		}
		return fmt.Sprintf("{type: gcs, endpoint: %s, credentials: %s}", ep, s.credentialsKind())
	}
	if s.Type == SourceOCI {
		return fmt.Sprintf("{type: oci, registry: %s, plainHTTP: %t, credentials: %s}", s.Registry, s.PlainHTTP, s.credentialsKind())
	}
	return fmt.Sprintf("{endpoint: %s, region: %q, pathStyle: %t, credentials: %s}", ep, s.Region, s.PathStyle, s.credentialsKind())
}

// GoString keeps %#v from printing the fields (and the secret).
func (s Source) GoString() string { return "fetch.Source" + s.String() }

// LogValue is what slog prints for a Source.
func (s Source) LogValue() slog.Value {
	if s.Type == SourceAzure {
		return slog.GroupValue(slog.String("type", s.Type), slog.String("endpoint", s.Endpoint), slog.String("account", s.Account),
			slog.String("credentials", s.azureCredentialsKind()))
	}
	if s.Type == SourceOCI {
		return slog.GroupValue(slog.String("type", s.Type), slog.String("registry", s.Registry),
			slog.Bool("plainHTTP", s.PlainHTTP), slog.String("credentials", s.credentialsKind()))
	}
	return slog.GroupValue(slog.String("type", s.Type), slog.String("endpoint", s.Endpoint), slog.String("region", s.Region),
		slog.Bool("pathStyle", s.PathStyle), slog.String("credentials", s.credentialsKind()))
}

// credentialsProvider returns the provider for the source's own credentials,
// or nil when it uses the default chain.
func (s Source) credentialsProvider() aws.CredentialsProvider {
	switch {
	case s.Anonymous:
		return aws.AnonymousCredentials{}
	case s.AccessKeyIDFile != "" || s.SecretAccessKeyFile != "":
		return aws.NewCredentialsCache(fileCredentials{s})
	case s.hasKeyID():
		return credentials.NewStaticCredentialsProvider(s.AccessKeyID, s.SecretAccessKey, "")
	}
	return nil
}

// fileCredentials reads keys from files on every refresh.
type fileCredentials struct{ s Source }

func (f fileCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	read := func(value, file string) (string, error) {
		if file == "" {
			return value, nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &credentialsError{err}
		}
		v := string(bytes.TrimSpace(b))
		if v == "" {
			return "", &credentialsError{fmt.Errorf("%s is empty", file)}
		}
		return v, nil
	}
	id, err := read(f.s.AccessKeyID, f.s.AccessKeyIDFile)
	if err != nil {
		return aws.Credentials{}, err
	}
	secret, err := read(f.s.SecretAccessKey, f.s.SecretAccessKeyFile)
	if err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, Source: "modelcache key files",
		CanExpire: true, Expires: time.Now().Add(credentialReload)}, nil
}

// sourcesFile is the YAML form; Source itself carries no tags so it cannot
// be marshalled back out with its secret by accident.
type sourcesFile struct {
	Sources map[string]struct {
		Type                string   `yaml:"type"`
		Endpoint            string   `yaml:"endpoint"`
		Region              string   `yaml:"region"`
		PathStyle           bool     `yaml:"pathStyle"`
		AccessKeyID         string   `yaml:"accessKeyID"`
		SecretAccessKey     string   `yaml:"secretAccessKey"`
		AccessKeyIDFile     string   `yaml:"accessKeyIDFile"`
		SecretAccessKeyFile string   `yaml:"secretAccessKeyFile"`
		Anonymous           bool     `yaml:"anonymous"`
		CredentialsFile     string   `yaml:"credentialsFile"`
		Token               string   `yaml:"token"`
		TokenFile           string   `yaml:"tokenFile"`
		Registry            string   `yaml:"registry"`
		Username            string   `yaml:"username"`
		Password            string   `yaml:"password"`
		PasswordFile        string   `yaml:"passwordFile"`
		DockerConfigFile    string   `yaml:"dockerConfigFile"`
		PlainHTTP           bool     `yaml:"plainHTTP"`
		Account             string   `yaml:"account"`
		AccountKey          string   `yaml:"accountKey"`
		AccountKeyFile      string   `yaml:"accountKeyFile"`
		SASToken            string   `yaml:"sasToken"`
		SASTokenFile        string   `yaml:"sasTokenFile"`
		Namespaces          []string `yaml:"namespaces"`
	} `yaml:"sources"`
	Endpoints []string `yaml:"endpoints"`
}

// Config is what the sources file configures: named sources, and the
// endpoints a ref may name itself (WithAllowedEndpoints).
type Config struct {
	Sources   map[string]Source
	Endpoints []string
}

// LoadSources reads the agent's sources file:
//
//	sources:
//	  minio:
//	    endpoint: http://minio.storage:9000
//	    region: us-east-1
//	    pathStyle: true
//	    accessKeyIDFile: /etc/modelcache/minio/access-key     # or accessKeyID: …
//	    secretAccessKeyFile: /etc/modelcache/minio/secret-key # or secretAccessKey: …
//	    namespaces: [ml-serving] # optional: only volumes of pods in these namespaces
//	  aws-prod:
//	    region: eu-west-1        # no keys: the AWS default chain (IRSA, instance profile)
//	  hub:                       # for hf:// refs with ?source=hub
//	    type: hf
//	    endpoint: https://hf-mirror.example  # optional (HF_ENDPOINT); default huggingface.co
//	    tokenFile: /etc/modelcache/hf/token  # or token: hf_…; for private and gated repos
//	  corp:                      # for oci:// refs with ?source=corp
//	    type: oci
//	    registry: registry.corp:5000         # the only registry these credentials go to
//	    plainHTTP: true                      # optional: http://, for a registry without TLS
//	    username: puller                     # optional: anonymous without
//	    passwordFile: /etc/modelcache/corp/password # or password: …, or instead of
//	                             # both dockerConfigFile: /etc/modelcache/regcred/.dockerconfigjson
//	  blobs:                     # for az:// refs with ?source=blobs
//	    type: azure
//	    account: mystorage                    # the only account its key goes to
//	    accountKeyFile: /etc/modelcache/az/key # or accountKey, sasToken(File), anonymous: true;
//	                                          # none: the agent's workload or managed identity
//	    endpoint: http://azurite.dev:10000    # optional; default https://ACCOUNT.blob.core.windows.net
//	  gcs:                       # for gs:// refs with ?source=gcs
//	    type: gcs
//	    credentialsFile: /etc/modelcache/gcs/key.json # optional: a service account key;
//	                             # without: Application Default Credentials (workload identity)
//	    # anonymous: true        # or: public buckets, no credentials
//	    # endpoint: http://fake-gcs:4443 # optional: an emulator or mirror of the JSON API
//	endpoints:                   # optional: endpoints a ref may name with ?endpoint=
//	  - https://s3.partner.example  # (requests are unsigned unless the volume brings keys)
//
// Unknown fields are errors (a misspelt key must not silently fall back to
// other credentials). Relative key file paths are relative to the sources
// file, and the files must be readable now, so a bad mount fails at start.
func LoadSources(path string) (map[string]Source, error) {
	c, err := LoadConfig(path)
	return c.Sources, err
}

// LoadConfig reads the whole sources file (see LoadSources).
func LoadConfig(path string) (Config, error) {
	sources, endpoints, err := loadConfig(path)
	return Config{Sources: sources, Endpoints: endpoints}, err
}

func loadConfig(path string) (map[string]Source, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch: read sources file: %w", err)
	}
	var sf sourcesFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&sf); err != nil && !errors.Is(err, io.EOF) {
		// yaml.v3 errors name lines, types and fields, not values: no secret
		// ends up in the message.
		return nil, nil, fmt.Errorf("fetch: sources file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	out := make(map[string]Source, len(sf.Sources))
	for name, y := range sf.Sources {
		var r model.Ref
		if err := r.SetOption("source", name); err != nil {
			return nil, nil, fmt.Errorf("fetch: sources file %s: %w", path, err)
		}
		s := Source{Type: y.Type, Token: y.Token, TokenFile: absTo(dir, y.TokenFile), Endpoint: strings.TrimSuffix(y.Endpoint, "/"), Region: y.Region, PathStyle: y.PathStyle,
			AccessKeyID: y.AccessKeyID, SecretAccessKey: y.SecretAccessKey,
			AccessKeyIDFile: absTo(dir, y.AccessKeyIDFile), SecretAccessKeyFile: absTo(dir, y.SecretAccessKeyFile),
			Anonymous: y.Anonymous, Namespaces: y.Namespaces, CredentialsFile: absTo(dir, y.CredentialsFile),
			Registry: y.Registry, Username: y.Username, Password: y.Password, PasswordFile: absTo(dir, y.PasswordFile), PlainHTTP: y.PlainHTTP,
			DockerConfigFile: absTo(dir, y.DockerConfigFile)}
		s.Account, s.AccountKey, s.AccountKeyFile = y.Account, y.AccountKey, absTo(dir, y.AccountKeyFile)
		s.SASToken, s.SASTokenFile = y.SASToken, absTo(dir, y.SASTokenFile)
		if err := s.Validate(); err != nil {
			return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
		}
		if _, err := s.hubToken(); err != nil {
			return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
		}
		if s.Type == SourceOCI {
			if _, err := s.ociLogin(); err != nil {
				return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
			}
		}
		if s.Type == SourceAzure && !s.Anonymous {
			if _, err := readSecret(s.AccountKey, s.AccountKeyFile, "accountKeyFile"); err != nil {
				return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
			}
			if _, err := readSecret(s.SASToken, s.SASTokenFile, "sasTokenFile"); err != nil {
				return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
			}
		}
		if s.Type == SourceGCS && s.CredentialsFile != "" {
			if _, err := s.gcsKeyTokens(); err != nil {
				return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
			}
		}
		if s.AccessKeyIDFile != "" || s.SecretAccessKeyFile != "" {
			if _, err := (fileCredentials{s}).Retrieve(context.Background()); err != nil {
				return nil, nil, fmt.Errorf("fetch: sources file %s: source %q: %w", path, name, err)
			}
		}
		out[name] = s
	}
	for _, e := range sf.Endpoints {
		var r model.Ref
		if err := r.SetOption("endpoint", e); err != nil {
			return nil, nil, fmt.Errorf("fetch: sources file %s: endpoints: %w", path, err)
		}
	}
	return out, sf.Endpoints, nil
}

func absTo(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func sourceNames(m map[string]Source) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none are configured"
	}
	return "configured: " + strings.Join(names, ", ")
}
