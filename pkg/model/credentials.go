package model

import (
	"errors"
	"fmt"
	"log/slog"
)

// Credentials are keys a volume brings (a CSI nodePublishSecretRef): the CSI
// plugin reads them from the Secret, the agent API carries them, and the
// fetcher signs with them instead of the source's own. One type for the
// whole way, so that how they print is written once: they never print.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyID"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
	// Token is a Hub access token (HF_TOKEN), for hf:// refs.
	Token string `json:"token,omitempty"`
	// DockerConfig is a docker config's JSON (a kubernetes.io/dockerconfigjson
	// Secret's .dockerconfigjson), for oci:// refs: its entry for the
	// ref's registry is the login.
	DockerConfig string `json:"dockerConfig,omitempty"`
	// AccountKey (shared key) or SASToken (a shared access signature, the
	// query string without its '?'): an Azure storage account's, for az://
	// refs.
	AccountKey string `json:"accountKey,omitempty"`
	SASToken   string `json:"sasToken,omitempty"`
	// ServiceAccountKey is a Google service account's JSON key, for gs://
	// refs.
	ServiceAccountKey string `json:"serviceAccountKey,omitempty"`
}

// Validate refuses half a key pair, and credentials with nothing in them.
func (c Credentials) Validate() error {
	if c.AccountKey != "" || c.SASToken != "" {
		return c.validateAzure()
	}
	if c.AccessKeyID != "" || c.SecretAccessKey != "" || (c.Token == "" && c.DockerConfig == "" && c.ServiceAccountKey == "") {
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			return errors.New("credentials need both an access key ID and a secret access key (S3, or a registry login), a token (Hub), a docker config (OCI) or a service account key (GCS)")
		}
	}
	return nil
}

// String shows the key ID's first characters only.
func (c Credentials) String() string {
	id := c.AccessKeyID
	if len(id) > 4 {
		id = id[:4] + "…"
	}
	if c.AccessKeyID == "" && c.Token != "" {
		return "{token: redacted}"
	}
	if c.AccessKeyID == "" && c.DockerConfig != "" {
		return "{dockerConfig: redacted}"
	}
	if c.AccessKeyID == "" && (c.AccountKey != "" || c.SASToken != "") {
		return "{azure: redacted}"
	}
	if c.AccessKeyID == "" && c.ServiceAccountKey != "" {
		return "{serviceAccountKey: redacted}"
	}
	return fmt.Sprintf("{accessKeyID: %s, secret: redacted}", id)
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return "model.Credentials" + c.String() }

// LogValue is what slog prints.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// validateAzure: an Azure account key or SAS token, one of them, alone.
func (c Credentials) validateAzure() error {
	if c.AccountKey != "" && c.SASToken != "" {
		return errors.New("credentials hold both an Azure account key and a SAS token; give one")
	}
	if c.AccessKeyID != "" || c.SecretAccessKey != "" || c.SessionToken != "" || c.Token != "" || c.DockerConfig != "" || c.ServiceAccountKey != "" {
		return errors.New("credentials mix an Azure account key or SAS token with S3 keys, a Hub token or a docker config; give one kind")
	}
	return nil
}
