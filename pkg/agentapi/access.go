package agentapi

import "github.com/modelcache/modelcache/pkg/model"

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
// their way to the agent, which hands them to its fetcher as they are: the
// same type end to end, which never prints its secret.
type Credentials = model.Credentials
