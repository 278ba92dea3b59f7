package model

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// SchemeAzure marks an Azure Blob Storage ref:
//
//	az://ACCOUNT/CONTAINER[/PREFIX][?endpoint=URL&source=NAME&revision=HEX&include=…&exclude=…]
//
// every blob under PREFIX/ in CONTAINER of storage account ACCOUNT is one
// file of the model. The account is part of the ref (as in blobfile's and
// Baseten's az://account/container/path), not left to the environment (as
// adlfs' az://container/path does): a node cache serves many tenants, and a
// model's name must say whose storage it is. Container and Prefix are kept
// in Bucket and Prefix.
const SchemeAzure = "az"

// Azure names: an account is 3-24 lowercase letters and digits; a container
// 3-63 lowercase letters, digits and single dashes, starting and ending with
// a letter or digit.
var (
	azAccountRE   = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	azContainerRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$`)
)

// parseAzure reads ACCOUNT/CONTAINER[/PREFIX] (what follows az://, its
// options cut off); msg says what is wrong, "" for nothing.
func parseAzure(rest string) (Ref, string) {
	account, path, _ := strings.Cut(rest, "/")
	if strings.Contains(account, ".") || strings.Contains(account, "@") {
		return Ref{}, fmt.Sprintf("account %q: want az://ACCOUNT/CONTAINER/PREFIX with the storage account's name alone "+
			"(https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX is az://ACCOUNT/CONTAINER/PREFIX; another cloud or Azurite: ?endpoint=)", account)
	}
	if !azAccountRE.MatchString(account) {
		return Ref{}, fmt.Sprintf("account %q: want 3-24 lowercase letters and digits (az://ACCOUNT/CONTAINER/PREFIX)", account)
	}
	container, prefix, _ := strings.Cut(path, "/")
	if !azContainerRE.MatchString(container) {
		return Ref{}, fmt.Sprintf("container %q: want 3-63 lowercase letters, digits and single dashes (az://ACCOUNT/CONTAINER/PREFIX)", container)
	}
	prefix, err := url.PathUnescape(prefix)
	if err != nil {
		return Ref{}, fmt.Sprintf("prefix: %v", err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if err := checkRelPath(prefix); err != nil {
			return Ref{}, fmt.Sprintf("prefix %v", err)
		}
	}
	return Ref{Scheme: SchemeAzure, Account: account, Bucket: container, Prefix: prefix}, ""
}

// azureString is the ref's az://ACCOUNT/CONTAINER[/PREFIX].
func (r Ref) azureString(b *strings.Builder) {
	b.WriteString("az://")
	b.WriteString(r.Account)
	b.WriteByte('/')
	b.WriteString(r.Bucket)
	if r.Prefix != "" {
		b.WriteByte('/')
		b.WriteString((&url.URL{Path: r.Prefix}).EscapedPath())
	}
}

// azureScope: blobs are one trust domain per source (or endpoint, or
// Azure itself), account and container.
func (r Ref) azureScope() string {
	switch {
	case r.Source != "":
		return "az:source=" + r.Source + "/" + r.Account + "/" + r.Bucket
	case r.Endpoint != "":
		return "az:endpoint=" + r.Endpoint + "/" + r.Account + "/" + r.Bucket
	}
	return "az/" + r.Account + "/" + r.Bucket
}

// azureHint says how to write as az:// what another tool's Azure URL names;
// "" when s is none.
func azureHint(s string) string {
	for _, p := range []string{"azure://", "abfs://", "abfss://", "wasb://", "wasbs://", "adl://"} {
		if strings.HasPrefix(s, p) {
			return "an Azure blob is az://ACCOUNT/CONTAINER/PREFIX (the storage account first)"
		}
	}
	if u, err := url.Parse(s); err == nil && strings.Contains(u.Hostname(), ".blob.") && u.User == nil {
		return fmt.Sprintf("a blob URL is written az://ACCOUNT/CONTAINER/PREFIX here: az://%s%s",
			strings.SplitN(u.Hostname(), ".", 2)[0], strings.TrimSuffix(u.EscapedPath(), "/"))
	}
	return ""
}

// AzureEndpoint drops a path that is just "/ACCOUNT" from an endpoint, so
// the blob endpoint of an Azurite connection string
// (BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1) names the server:
// the account is the ref's.
func AzureEndpoint(account, endpoint string) string {
	if account != "" {
		if e, ok := strings.CutSuffix(strings.TrimSuffix(endpoint, "/"), "/"+account); ok && strings.Count(e, "/") == 2 {
			return e
		}
	}
	return endpoint
}
