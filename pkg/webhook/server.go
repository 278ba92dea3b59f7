package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PathMutatePods is where the API server sends pods.
const PathMutatePods = "/mutate-pods"

// maxReviewBytes bounds a request: the API server caps objects at about
// 3 MiB, and an AdmissionReview of a pod holds the pod once (twice for an
// update, which this webhook is not registered for).
const maxReviewBytes = 7 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handler serves AdmissionReview v1 requests for pods at PathMutatePods.
func (m *Mutator) Handler(log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathMutatePods, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
		if err != nil || len(body) > maxReviewBytes {
			http.Error(w, "request unreadable or over 7 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, "not an AdmissionReview with a request", http.StatusBadRequest)
			return
		}
		resp := m.review(review.Request, log)
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
		out.APIVersion, out.Kind = admissionv1.SchemeGroupVersion.String(), "AdmissionReview"
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// review answers one request: always allowed, with a patch when the pod
// gets an affinity.
func (m *Mutator) review(req *admissionv1.AdmissionRequest, log *slog.Logger) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		resp.Warnings = []string{"modelcache: the pod could not be read; admitted unchanged"}
		return resp
	}
	aff, changed, warnings := m.Affinity(&pod, req.Namespace)
	resp.Warnings = warnings
	if !changed {
		return resp
	}
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/affinity", "value": aff}})
	if err != nil {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("modelcache: %v; admitted unchanged", err))
		return resp
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	log.Debug("pod affinity set", "namespace", req.Namespace, "pod", podName(&pod))
	return resp
}

// podName is the name, or the generateName of a pod a controller makes.
func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "…"
}
