package agentapi

import (
	"fmt"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// State of a model on this node, as the API reports it.
type State string

const (
	StateQueued   State = "queued"   // waiting for a download slot (--max-downloads)
	StateListing  State = "listing"  // reading the bucket listing
	StateFetching State = "fetching" // downloading
	StateReady    State = "ready"    // committed; Path is mountable
	StateFailed   State = "failed"   // see Error
)

// Progress is what ensure and status report for one model.
type Progress struct {
	Ref      string `json:"ref"`
	State    State  `json:"state"`
	Revision string `json:"revision,omitempty"`
	// Path of the read-only model tree, when ready.
	Path string `json:"path,omitempty"`
	// Hit is true when the model was already held and nothing was fetched.
	Hit        bool      `json:"hit"`
	TotalBytes int64     `json:"totalBytes"`
	DoneBytes  int64     `json:"doneBytes"`
	Files      int       `json:"files"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	// BytesPerSecond over the download so far.
	BytesPerSecond float64 `json:"bytesPerSecond"`
	ETASeconds     float64 `json:"etaSeconds"`
	// FetchedBytes came from S3; the rest of DoneBytes was resumed or deduplicated.
	FetchedBytes int64  `json:"fetchedBytes"`
	Error        string `json:"error,omitempty"`
	ErrorClass   string `json:"errorClass,omitempty"`
	// Warm reports the page-cache warm-up an ensure asked for.
	Warm *WarmReport `json:"warm,omitempty"`
}

// Message is one human line, the one kubelet shows in pod events while a
// volume waits: "fetching s3://b/m: 45 pct, 1.8/4.0 GiB, 1.1 GiB/s, eta 2s".
// It has no percent sign because kubelet passes the CSI error to Eventf as
// the format string, so "45% 1" would reach the pod's events as
// "45%! (MISSING)".
func (p Progress) Message() string {
	switch p.State {
	case StateReady:
		return fmt.Sprintf("ready %s revision %s (%s)", p.Ref, p.Revision, model.FormatBytes(p.TotalBytes))
	case StateFailed:
		return fmt.Sprintf("failed %s: %s", p.Ref, p.Error)
	case StateListing:
		return fmt.Sprintf("listing %s", p.Ref)
	case StateQueued:
		return fmt.Sprintf("queued %s: waiting for one of the agent's download slots", p.Ref)
	}
	pct := 0.0
	if p.TotalBytes > 0 {
		pct = 100 * float64(p.DoneBytes) / float64(p.TotalBytes)
	}
	return fmt.Sprintf("fetching %s: %.0f pct, %s/%s, %s/s, eta %s", p.Ref, pct,
		model.FormatBytes(p.DoneBytes), model.FormatBytes(p.TotalBytes),
		model.FormatBytes(int64(p.BytesPerSecond)), formatETA(p.ETASeconds))
}

func formatETA(sec float64) string {
	if sec <= 0 {
		return "?"
	}
	return (time.Duration(sec*float64(time.Second)) + time.Second/2).Truncate(time.Second).String()
}

// WarmReport says what a page-cache warm-up did (EnsureOptions.WarmPageCache).
type WarmReport struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"` // the model's bytes
	// ResidentBytes were in the page cache already (a fresh download leaves
	// its bytes there); ReadBytes were read in from disk by the warm-up.
	ResidentBytes int64 `json:"residentBytes"`
	ReadBytes     int64 `json:"readBytes"`
	// SkippedBytes did not fit the memory budget and were left on disk:
	// warming them would only push out the files before them.
	SkippedBytes int64   `json:"skippedBytes"`
	Seconds      float64 `json:"seconds"`
	Error        string  `json:"error,omitempty"`
}
