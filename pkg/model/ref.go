// Package model names models and describes their content: s3://, gs://,
// hf:// and oci:// references, object-key sanitizing, file filters, manifests and the content
// digests the cache stores blobs under. It is the leaf of the house: stdlib
// and xxhash only.
package model

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalidRef marks a model reference that cannot be parsed or is unsafe.
var ErrInvalidRef = errors.New("model: invalid reference")

// Ref names a model.
//
//	s3://BUCKET/PREFIX[?endpoint=URL&region=R&source=NAME&revision=HEX&include=…&exclude=…]
//	  every object under PREFIX/ in BUCKET is one file of the model;
//	gs://BUCKET/PREFIX[?endpoint=URL&source=NAME&revision=HEX&include=…&exclude=…]
//	  the same for a Google Cloud Storage bucket;
//	hf://ORG/NAME[@REV][?endpoint=URL&source=NAME&revision=HEX&include=…&exclude=…]
//	  the files of a Hugging Face Hub model repo at REV (a branch, tag or
//	  commit; main if absent), resolved to its commit when listed;
//	oci://REGISTRY/REPO[:TAG|@sha256:HEX][?source=NAME&revision=HEX&include=…&exclude=…]
//	  the files of an OCI artifact (each layer with a file path annotation
//	  is a file) at TAG or digest (latest if absent), resolved to its
//	  manifest digest when listed;
//	az://ACCOUNT/CONTAINER/PREFIX[?endpoint=URL&source=NAME&…] (azure.go)
//	  every blob under PREFIX/ in an Azure storage container is one file.
//
// One string carries everything a volume attribute or annotation needs.
type Ref struct {
	// Scheme is SchemeHF, SchemeOCI, SchemeAzure, SchemeGCS, or "" for S3 (s3://).
	Scheme string
	Bucket string // S3, GCS
	Prefix string // S3, GCS: no leading or trailing slash; may be empty (whole bucket)
	// Registry is an OCI registry's HOST[:PORT], lowercase.
	Registry string
	// Repo is the Hub repo ("ORG/NAME") and At its revision (branch, tag
	// or commit; "" is main); or the OCI repository (a path of the
	// distribution spec's name grammar) and At its tag or "sha256:HEX"
	// manifest digest ("" is latest).
	Repo, At string
	// Endpoint overrides the S3 endpoint (MinIO and other S3-compatible
	// servers), the Hub's (a mirror, HF_ENDPOINT) or GCS's (an emulator or
	// a mirror of its JSON API).
	Endpoint string
	// Region of the bucket; empty means the source's or the SDK's default.
	Region string
	// Source names an entry of the agent's sources file (endpoint + credentials).
	Source string
	// Revision pins an exact manifest digest; empty means "what the source holds".
	Revision string
	// Include and Exclude select the model's files (comma-separated
	// patterns, see Filter): "*.safetensors,*.json" and "original/" keep
	// the weights and configs a repo carries, not its .bin duplicates.
	Include, Exclude string

	// Account is an Azure storage account (az://ACCOUNT/CONTAINER/PREFIX,
	// whose container is Bucket and prefix Prefix).
	Account string
}

// SchemeHF marks a Hugging Face Hub ref, SchemeOCI an OCI artifact's,
// SchemeGCS a Google Cloud Storage prefix's (gs://).
const (
	SchemeHF  = "hf"
	SchemeOCI = "oci"
	SchemeGCS = "gs"
)

// bucketRE follows the S3 bucket naming rules loosely enough for
// S3-compatible servers (dots, underscores) yet refuses anything path-like.
var bucketRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{2,254}$`)

var sourceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

var revisionRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// hfRepoRE is the Hub's repo id, ORG/NAME; hfRevRE a branch, tag or commit
// (refs/pr/1 has slashes). Both need no escaping in a URL path.
var (
	hfRepoRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	hfRevRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)
)

// userinfoRE finds credentials pasted into a URL, so errors never echo them.
var userinfoRE = regexp.MustCompile(`(://)[^/?&@]*@`)

var regionRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// OCI names: a registry is a DNS name or IPv4 address with an optional
// port (no userinfo, path or IPv6 literal); a repository follows the
// distribution spec's name grammar (lowercase path components joined by
// '.', '_', '__' or dashes); a tag its tag grammar. None needs escaping in
// a URL path.
var (
	ociHostRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$`)
	ociRepoRE   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	ociTagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	ociDigestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// ParseRef parses and validates a reference in its string form.
func ParseRef(s string) (Ref, error) {
	// Credentials pasted into a ref ("s3://user:key@bucket", an endpoint with
	// user:pass@) must reach no error, and details echo parts of s.
	var secrets []string
	for _, m := range userinfoRE.FindAllString(s, -1) {
		if secret := strings.TrimPrefix(m, "://"); secret != "@" {
			// With and without its "@": "hf://u:key@org/m" reads as a repo
			// "u:key" and a revision, which messages would echo.
			secrets = append(secrets, secret, strings.TrimSuffix(secret, "@"))
		}
	}
	bad := func(format string, a ...any) (Ref, error) {
		shown := fmt.Sprintf("%q", stripAll(s, secrets))
		if len(secrets) > 0 {
			shown += " (credentials removed)"
		}
		msg := stripAll(fmt.Sprintf("%s: %s", shown, fmt.Sprintf(format, a...)), secrets)
		return Ref{}, fmt.Errorf("%w %s", ErrInvalidRef, msg)
	}
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty; want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX, hf://ORG/NAME[@REVISION] or oci://REGISTRY/REPO[:TAG|@sha256:HEX]", ErrInvalidRef)
	}
	if strings.ContainsRune(s, 0) {
		return bad("contains a NUL byte")
	}
	var r Ref
	var query string
	if rest, ok := strings.CutPrefix(s, "hf://"); ok {
		rest, query, _ = strings.Cut(rest, "?")
		repo, at, hasAt := strings.Cut(rest, "@")
		if !hfRepoRE.MatchString(repo) || strings.Contains(repo, "..") {
			return bad("repo %q: want ORG/NAME of letters, digits, '.', '_' and '-'", repo)
		}
		if hasAt && (!hfRevRE.MatchString(at) || strings.Contains(at, "..") || strings.Contains(at, "//") || strings.HasSuffix(at, "/")) {
			return bad("revision %q: want a branch, tag or commit", at)
		}
		r = Ref{Scheme: SchemeHF, Repo: repo, At: at}
	} else if rest, ok := strings.CutPrefix(s, "oci://"); ok {
		rest, query, _ = strings.Cut(rest, "?")
		var msg string
		if r, msg = parseOCI(rest); msg != "" {
			return bad("%s", msg)
		}
	} else if rest, ok := strings.CutPrefix(s, "az://"); ok {
		rest, query, _ = strings.Cut(rest, "?")
		var msg string
		if r, msg = parseAzure(rest); msg != "" {
			return bad("%s", msg)
		}
	} else {
		rest, ok := strings.CutPrefix(s, "s3://")
		if gs, isGS := strings.CutPrefix(s, "gs://"); isGS {
			rest, ok, r.Scheme = gs, true, SchemeGCS
		}
		if h := azureHint(s); !ok && h != "" {
			return bad("%s", h)
		}
		if !ok {
			return bad("want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX, hf://ORG/NAME[@REVISION] or oci://REGISTRY/REPO[:TAG|@sha256:HEX]")
		}
		rest, query, _ = strings.Cut(rest, "?")
		bucket, prefix, _ := strings.Cut(rest, "/")
		if r.Scheme == SchemeGCS {
			if msg := checkGCSBucket(bucket); msg != "" {
				return bad("bucket name %q: %s", bucket, msg)
			}
		} else if !bucketRE.MatchString(bucket) {
			return bad("bucket name %q is not valid", bucket)
		}
		prefix, err := url.PathUnescape(prefix)
		if err != nil {
			return bad("prefix: %v", err)
		}
		prefix = strings.TrimSuffix(prefix, "/")
		if prefix != "" {
			if err := checkRelPath(prefix); err != nil {
				return bad("prefix %v", err)
			}
		}
		r = Ref{Scheme: r.Scheme, Bucket: bucket, Prefix: prefix}
	}
	if query != "" {
		vals, err := url.ParseQuery(query)
		if err != nil {
			return bad("options: %v", err)
		}
		for k, v := range vals {
			if len(v) != 1 {
				return bad("option %q given %d times", k, len(v))
			}
			if err := r.SetOption(k, v[0]); err != nil {
				return bad("%v", err)
			}
		}
	}
	if r.Scheme == SchemeHF && r.Region != "" {
		return bad("region is an S3 option; a Hub ref has none")
	}
	if r.Scheme == SchemeGCS && r.Region != "" {
		return bad("region is an S3 option; a gs:// ref has none (GCS finds the bucket by its name)")
	}
	return r, nil
}

// SetOption sets one named option (endpoint, region, source, revision) after
// validating it. It is how volume attributes and flags add to a parsed ref.
func (r *Ref) SetOption(key, val string) error {
	if key == "endpoint" && r.Scheme == SchemeAzure {
		val = AzureEndpoint(r.Account, val)
	}
	if key == "region" && r.Scheme == SchemeAzure {
		return fmt.Errorf("region is not an option of an az:// ref: the account names where the blobs are")
	}
	if (key == "endpoint" || key == "region") && r.Scheme == SchemeOCI {
		return fmt.Errorf("%s is not an option of an oci:// ref: the registry is part of the ref (oci://REGISTRY/REPO)", key)
	}
	switch key {
	case "endpoint":
		// Only scheme and host: anything else would not survive the
		// ref's string form unchanged, and an S3 endpoint has no path.
		u, err := url.Parse(val)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return fmt.Errorf("endpoint %q: want http(s)://HOST[:PORT] without credentials or path", redactURL(val))
		}
		r.Endpoint = u.Scheme + "://" + u.Host
	case "region":
		if !regionRE.MatchString(val) {
			return fmt.Errorf("region %q is not valid", val)
		}
		r.Region = val
	case "source":
		if !sourceRE.MatchString(val) {
			return fmt.Errorf("source name %q is not valid", val)
		}
		r.Source = val
	case "revision":
		if !revisionRE.MatchString(val) {
			return fmt.Errorf("revision %q: want 16 lowercase hex digits (a manifest digest)", val)
		}
		r.Revision = val
	case "include", "exclude":
		pats := SplitPatterns(val)
		if _, err := NewFilter(pats, nil); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if key == "include" {
			r.Include = strings.Join(pats, ",")
		} else {
			r.Exclude = strings.Join(pats, ",")
		}
	default:
		return fmt.Errorf("unknown option %q (known: endpoint, region, source, revision, include, exclude)", key)
	}
	return nil
}

// stripAll removes every "user:pass@" of secrets from s, again until none is
// left: removing one can join the text around it into another.
func stripAll(s string, secrets []string) string {
	for changed := true; changed; {
		changed = false
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				s, changed = strings.ReplaceAll(s, secret, ""), true
			}
		}
	}
	return s
}

// redactURL keeps credentials someone pasted into an endpoint out of errors.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return s
}

// SchemeName is the ref's scheme as written before "://" ("s3" for S3):
// a small fixed set, so it can label metrics.
func (r Ref) SchemeName() string {
	if r.Scheme == "" {
		return "s3"
	}
	return r.Scheme
}

// String is the canonical string form; ParseRef(r.String()) == r.
func (r Ref) String() string {
	var b strings.Builder
	switch r.Scheme {
	case SchemeHF:
		b.WriteString("hf://")
		b.WriteString(r.Repo)
		if r.At != "" {
			b.WriteByte('@')
			b.WriteString(r.At)
		}
	case SchemeOCI:
		b.WriteString("oci://")
		b.WriteString(r.Registry)
		b.WriteByte('/')
		b.WriteString(r.Repo)
		switch {
		case strings.HasPrefix(r.At, "sha256:"):
			b.WriteByte('@')
			b.WriteString(r.At)
		case r.At != "":
			b.WriteByte(':')
			b.WriteString(r.At)
		}
	case SchemeAzure:
		r.azureString(&b)
	default:
		if r.Scheme == SchemeGCS {
			b.WriteString("gs://")
		} else {
			b.WriteString("s3://")
		}
		b.WriteString(r.Bucket)
		if r.Prefix != "" {
			b.WriteByte('/')
			b.WriteString((&url.URL{Path: r.Prefix}).EscapedPath())
		}
	}
	var opts []string
	add := func(k, v string) {
		if v != "" {
			opts = append(opts, k+"="+url.QueryEscape(v))
		}
	}
	add("endpoint", r.Endpoint)
	add("region", r.Region)
	add("revision", r.Revision)
	add("source", r.Source)
	// Patterns keep their '*', ',' and '/' readable in status and events.
	// (Only theirs: the other options' escaping is part of existing IDs.)
	for k, v := range map[string]string{"include": r.Include, "exclude": r.Exclude} {
		if v != "" {
			opts = append(opts, k+"="+escapePatterns(v))
		}
	}
	sort.Strings(opts)
	if len(opts) > 0 {
		b.WriteByte('?')
		b.WriteString(strings.Join(opts, "&"))
	}
	return b.String()
}

// escapePatterns query-escapes v except the characters patterns are made
// of that a query value may hold as they are.
func escapePatterns(v string) string {
	var b strings.Builder
	for _, c := range []byte(v) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~*,/:!", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Filter is the ref's include and exclude patterns, compiled.
func (r Ref) Filter() (Filter, error) {
	return NewFilter(SplitPatterns(r.Include), SplitPatterns(r.Exclude))
}

// SplitPatterns splits a comma-separated list of patterns, dropping blanks.
func SplitPatterns(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Location is the ref without its revision: the place models are read from.
func (r Ref) Location() Ref {
	r.Revision = ""
	return r
}

// ID names the model's location (not its revision) on disk: 32 hex digits
// of the SHA-256 of the location, stable across restarts and safe as a
// directory name. It must be collision-resistant: two locations with one ID
// would share a directory and a state entry, so a tenant who could build a
// location with the ID of another's model would be served that model.
func (r Ref) ID() string {
	sum := sha256.Sum256([]byte(r.Location().String()))
	return hex.EncodeToString(sum[:16])
}

// Scope is the trust domain of the model's objects: the source (or endpoint,
// or AWS) and the bucket. Content is reused by its (ETag, size) before a
// download only within one scope, because an ETag is what a server says,
// not a property of the bytes: another server can list any ETag it likes.
func (r Ref) Scope() string {
	if r.Scheme == SchemeAzure {
		return r.azureScope()
	}
	if r.Scheme == SchemeOCI {
		if r.Source != "" {
			return "oci:source=" + r.Source + "/" + r.Registry + "/" + r.Repo
		}
		return "oci/" + r.Registry + "/" + r.Repo
	}
	if r.Scheme == SchemeGCS {
		switch {
		case r.Source != "":
			return "gs:source=" + r.Source + "/" + r.Bucket
		case r.Endpoint != "":
			return "gs:endpoint=" + r.Endpoint + "/" + r.Bucket
		}
		return "gs/" + r.Bucket
	}
	if r.Scheme == SchemeHF {
		switch {
		case r.Source != "":
			return "hf:source=" + r.Source + "/" + r.Repo
		case r.Endpoint != "":
			return "hf:endpoint=" + r.Endpoint + "/" + r.Repo
		}
		return "hf/" + r.Repo
	}
	switch {
	case r.Source != "":
		return "source=" + r.Source + "/" + r.Bucket
	case r.Endpoint != "":
		return "endpoint=" + r.Endpoint + "/" + r.Bucket
	}
	return "aws/" + r.Bucket
}

// parseOCI reads REGISTRY/REPO[:TAG|@sha256:HEX] (what follows oci://, its
// options cut off); msg says what is wrong, "" for nothing.
func parseOCI(rest string) (Ref, string) {
	reg, path, _ := strings.Cut(rest, "/")
	reg = strings.ToLower(reg)
	if !ociHostRE.MatchString(reg) || len(reg) > 253+6 {
		return Ref{}, fmt.Sprintf("registry %q: want HOST[:PORT] (a DNS name or IPv4 address, no credentials)", reg)
	}
	if _, port, ok := strings.Cut(reg, ":"); ok {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Ref{}, fmt.Sprintf("registry %q: port %s is not 1 to 65535", reg, port)
		}
	}
	repo, at := path, ""
	if i := strings.IndexByte(path, '@'); i >= 0 {
		repo, at = path[:i], path[i+1:]
		if !ociDigestRE.MatchString(at) {
			return Ref{}, fmt.Sprintf("digest %q: want sha256: and 64 lowercase hex digits (other algorithms are not supported)", at)
		}
	}
	if i := strings.LastIndexByte(repo, ':'); i >= 0 && i > strings.LastIndexByte(repo, '/') {
		if at != "" {
			return Ref{}, "give a tag or a digest, not both"
		}
		repo, at = repo[:i], repo[i+1:]
		if !ociTagRE.MatchString(at) {
			return Ref{}, fmt.Sprintf("tag %q: want letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'", at)
		}
	}
	if !ociRepoRE.MatchString(repo) || len(repo) > 255 {
		return Ref{}, fmt.Sprintf("repository %q: want lowercase path components of letters and digits joined by '.', '_' or '-' (oci://REGISTRY/REPO[:TAG|@sha256:HEX])", repo)
	}
	return Ref{Scheme: SchemeOCI, Registry: reg, Repo: repo, At: at}, ""
}

// gcsComponentRE is one dot-separated component of a GCS bucket name.
var gcsComponentRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// checkGCSBucket follows Google Cloud Storage's bucket naming rules: 3 to
// 63 characters (222 with dots, 63 per dot-separated part) of lowercase
// letters, digits, '-', '_' and '.', starting and ending with a letter or
// digit; not an IP address, not starting with "goog", not holding "google".
// msg says what is wrong, "" for nothing.
func checkGCSBucket(b string) string {
	switch {
	case len(b) < 3 || len(b) > 222 || (len(b) > 63 && !strings.Contains(b, ".")):
		return "want 3 to 63 characters (up to 222 with dots)"
	case strings.HasPrefix(b, "goog") || strings.Contains(b, "google"):
		return `may not start with "goog" or hold "google"`
	case net.ParseIP(b) != nil:
		return "may not be an IP address"
	}
	for c := range strings.SplitSeq(b, ".") {
		if !gcsComponentRE.MatchString(c) {
			return "want lowercase letters, digits, '-', '_' and '.', each dot-separated part 1 to 63 long, starting and ending with a letter or digit"
		}
	}
	return ""
}
