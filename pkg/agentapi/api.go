// Package agentapi is the cache agent's socket API as its callers see it:
// the JSON requests and answers, the error classes and the Go client. It
// imports only the standard library and pkg/model, so the CSI plugin and the
// CLI link neither the content store nor the AWS SDK (STYLE rule 16); the
// engine that serves the API is pkg/agent.
//
// The JSON field names are the wire format: an older plugin or CLI talks to
// a newer agent, so a name never changes.
package agentapi

import "time"

// API requests. Refs are in their string form, options included
// (s3://bucket/prefix?source=NAME&revision=HEX).
type (
	EnsureRequest struct {
		Ref     string `json:"ref"`
		Refresh bool   `json:"refresh,omitempty"`
		// WaitSeconds bounds the wait for the model; 0 answers at once.
		WaitSeconds float64 `json:"waitSeconds,omitempty"`
		// Watch streams progress as JSON lines while waiting; the last line is final.
		Watch bool `json:"watch,omitempty"`
		// Access is who the model is for (see Access); the CSI plugin sets it.
		Access *Access `json:"access,omitempty"`
		// WarmPageCache reads the model into the page cache once it is ready.
		WarmPageCache bool `json:"warmPageCache,omitempty"`
	}
	PinRequest struct {
		Ref    string `json:"ref"`
		Holder string `json:"holder"`
	}
	PinResponse struct {
		Ref      string `json:"ref"`
		Revision string `json:"revision"`
		Path     string `json:"path"`
		Size     int64  `json:"sizeBytes"`
	}
	EvictRequest struct {
		Ref string `json:"ref"`
	}
	EvictResponse struct {
		Evicted []string `json:"evicted"`
	}
	// ErrorResponse is the body of every answer with a status of 300 or
	// more; Class is one of the Class* names.
	ErrorResponse struct {
		Error string `json:"error"`
		Class string `json:"class"`
	}
)

// EnsureOptions tune an ensure, in the client and in the agent alike.
type EnsureOptions struct {
	// Refresh lists the bucket even when a revision is held, and fetches a
	// newer one if the bucket changed. Without it a held model is a hit with
	// no request to S3: what a pod start needs.
	Refresh bool
	// Wait bounds how long the ensure blocks; the download goes on after it
	// returns. Zero returns at once with the current progress.
	Wait time.Duration
	// Access, if set, is checked before anything else (see Access).
	Access *Access
	// WarmPageCache reads the model into the page cache once it is ready:
	// within the wait, and reported in Progress.Warm, or in the background
	// after a download that outlasts it.
	WarmPageCache bool
}
