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
	// ServiceAccountKey is a Google service account's JSON key, for gs://
	// refs.
	ServiceAccountKey string `json:"serviceAccountKey,omitempty"`
}

// Validate refuses half a key pair, and credentials with nothing in them.
func (c Credentials) Validate() error {
	if c.AccessKeyID != "" || c.SecretAccessKey != "" || (c.Token == "" && c.ServiceAccountKey == "") {
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			return errors.New("credentials need both an access key ID and a secret access key (S3), a token (Hub), or a service account key (GCS)")
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
	if c.AccessKeyID == "" && c.ServiceAccountKey != "" {
		return "{serviceAccountKey: redacted}"
	}
	return fmt.Sprintf("{accessKeyID: %s, secret: redacted}", id)
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return "model.Credentials" + c.String() }

// LogValue is what slog prints.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
