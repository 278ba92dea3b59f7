package webhook

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func post(t *testing.T, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, PathMutatePods, bytes.NewReader(body)))
	return w
}

func review(t *testing.T, op admissionv1.Operation, resource string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, _ := json.Marshal(pod)
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u-1", Operation: op, Namespace: "ml",
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: resource}, Object: runtime.RawExtension{Raw: raw}}})
	return b
}

// Whatever it is sent, the handler answers with an allowed review (or an
// HTTP error for what is not a review), and patches only a pod create.
func TestHandler(t *testing.T) {
	h := (&Mutator{DriverName: driver, Lookup: lookup()}).Handler(slog.New(slog.DiscardHandler))
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{inline("m", "s3://models/llama")}}}

	w := post(t, h, review(t, admissionv1.Create, "pods", pod))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if !out.Response.Allowed || out.Response.UID != "u-1" || out.Response.PatchType == nil ||
		!strings.Contains(string(out.Response.Patch), key(t, "s3://models/llama")) {
		t.Errorf("pod create: %+v patch %s", out.Response, out.Response.Patch)
	}
	for name, body := range map[string][]byte{
		"update":    review(t, admissionv1.Update, "pods", pod),
		"not a pod": review(t, admissionv1.Create, "configmaps", pod),
	} {
		w := post(t, h, body)
		out = admissionv1.AdmissionReview{}
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil || !out.Response.Allowed || out.Response.Patch != nil {
			t.Errorf("%s: %d %s", name, w.Code, w.Body)
		}
	}
	for name, c := range map[string]struct {
		body []byte
		code int
	}{
		"not JSON":   {[]byte("{"), http.StatusBadRequest},
		"no request": {[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest},
		"oversized":  {bytes.Repeat([]byte(" "), maxReviewBytes+1), http.StatusRequestEntityTooLarge},
	} {
		if w := post(t, h, c.body); w.Code != c.code {
			t.Errorf("%s: %d, want %d", name, w.Code, c.code)
		}
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathMutatePods, nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}
	// A pod that does not decode is admitted unchanged, with a warning.
	bad, _ := json.Marshal(admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{UID: "u-2", Operation: admissionv1.Create,
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Object: runtime.RawExtension{Raw: []byte(`{"spec":5}`)}}})
	out = admissionv1.AdmissionReview{}
	if err := json.Unmarshal(post(t, h, bad).Body.Bytes(), &out); err != nil || !out.Response.Allowed || out.Response.Patch != nil || len(out.Response.Warnings) != 1 {
		t.Errorf("an undecodable pod: %+v (%v)", out.Response, err)
	}
}
