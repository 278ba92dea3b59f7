package gcs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/modelcache/modelcache/pkg/source"
)

// ReadOnlyScope is the OAuth2 scope tokens are asked for: reading objects
// and listing them, nothing more.
const ReadOnlyScope = "https://www.googleapis.com/auth/devstorage.read_only"

// maxKeyBytes bounds a service account key (about 2.3 KB in practice).
const maxKeyBytes = 64 << 10

// ServiceAccountTokenSource makes access tokens from a service account's
// JSON key (what `gcloud iam service-accounts keys create` writes): each
// is a JWT signed here with the key's private key, which Google's APIs
// take as an access token (the official SDK does the same). No token
// service is asked, so a key cannot name a server for the agent to send
// requests to (a key's token_uri is never used), and other credential
// types (external_account, authorized_user) are refused: their
// configuration names files and URLs the agent would read or call.
//
// Errors name the fields that are wrong, never their values.
func ServiceAccountTokenSource(key []byte) (oauth2.TokenSource, error) {
	if len(key) > maxKeyBytes {
		return nil, fmt.Errorf("the service account key is more than %d bytes", maxKeyBytes)
	}
	var k struct {
		Type         string `json:"type"`
		ClientEmail  string `json:"client_email"`
		PrivateKey   string `json:"private_key"`
		PrivateKeyID string `json:"private_key_id"`
	}
	if err := json.Unmarshal(key, &k); err != nil {
		return nil, errors.New("the service account key is not JSON (want the key file a service account's key creation writes)")
	}
	switch {
	case k.Type != "service_account":
		return nil, fmt.Errorf("the key's type is %q: only service_account keys are taken (workload identity needs no key: leave it out and use a source without credentials)", source.Trim(source.Clean(k.Type)))
	case k.ClientEmail == "":
		return nil, errors.New("the service account key has no client_email")
	case !strings.Contains(k.PrivateKey, "PRIVATE KEY"):
		return nil, errors.New("the service account key has no private_key in PEM")
	}
	ts, err := google.JWTAccessTokenSourceWithScope(key, ReadOnlyScope)
	if err != nil {
		return nil, errors.New("the service account key's private_key is not an RSA private key in PEM")
	}
	return ts, nil
}

// DefaultTokenSource is Application Default Credentials: the file
// GOOGLE_APPLICATION_CREDENTIALS names, gcloud's, or the metadata server's
// (on GKE with workload identity: the Kubernetes service account's Google
// identity). Callers must send its tokens only where the operator said.
func DefaultTokenSource(ctx context.Context) (oauth2.TokenSource, error) {
	// The credentials outlive ctx: their token source refreshes with a
	// context of its own.
	creds, err := google.FindDefaultCredentials(context.WithoutCancel(ctx), ReadOnlyScope)
	if err != nil {
		return nil, fmt.Errorf("no Application Default Credentials (workload identity, GOOGLE_APPLICATION_CREDENTIALS): %v", firstLine(err.Error()))
	}
	return creds.TokenSource, nil
}
