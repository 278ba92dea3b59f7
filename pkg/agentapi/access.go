package agentapi

import (
	"errors"
	"fmt"
	"log/slog"
)

// Access is who an ensure is for: the CSI plugin sends it for every volume,
// so that a model held on the node is served only to a pod that could have
// read it from the bucket. The CLI and the prefetch controller, local and
// trusted, send none.
type Access struct {
	// Namespace of the pod; checked against a source's namespaces list.
	Namespace string `json:"namespace"`
	// Credentials of the volume (nodePublishSecretRef). When set, the agent
	// asks S3 whether they may read the model, even on a cache hit, and a
	// download the ensure starts uses them.
	Credentials *Credentials `json:"credentials,omitempty"`
}

// Credentials are keys a volume brings (a CSI nodePublishSecretRef), on
// their way to the agent, which hands them to its fetcher. They have the
// fetcher's JSON field names and, like them, never print.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyID"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// Validate refuses half a key pair.
func (c Credentials) Validate() error {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return errors.New("credentials need both an access key ID and a secret access key")
	}
	return nil
}

// String shows the key ID's first characters only.
func (c Credentials) String() string {
	id := c.AccessKeyID
	if len(id) > 4 {
		id = id[:4] + "…"
	}
	return fmt.Sprintf("{accessKeyID: %s, secret: redacted}", id)
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return "agentapi.Credentials" + c.String() }

// LogValue is what slog prints.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
