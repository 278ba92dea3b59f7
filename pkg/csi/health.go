package csi

import (
	"net/http"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// HealthHandler serves the plugin's HTTP probes for its container:
//
//	/healthz  the process serves HTTP: for a liveness probe. It does not
//	          depend on the agent, so an agent that is down or restarting
//	          never gets the plugin killed too (its mounts stay served).
//	/readyz   the Identity Probe: 200 while the cache agent answers, 503
//	          otherwise; for a readiness probe and for humans.
func (d *Driver) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Probe(r.Context(), &csi.ProbeRequest{})
		if err != nil || !res.GetReady().GetValue() {
			http.Error(w, "not ready: cache agent not answering", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
