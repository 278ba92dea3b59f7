package agent

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

// The socket is root-only, but a buggy or hostile client must still get an
// error, never a panic, for any body: decoding is all that runs before the
// agent acts, so it is what this fuzzes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"ref":"s3://models/m?source=test","waitSeconds":5}`))
	f.Add([]byte(`{"ref":"s3://models/m","access":{"namespace":"ns","credentials":{"accessKeyID":"a","secretAccessKey":"b"}}}`))
	f.Add([]byte(`{"ref":"s3://models/m","holder":"csi:x"}`))
	f.Add([]byte(`{"ref":"s3://models/m"} {"ref":"x"}`))
	f.Add([]byte(`{"ref":"s3://models/../m"}`))
	f.Add([]byte(`{"ref":1e400}`))
	f.Add([]byte(`{"unknown":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, req := range []any{&agentapi.EnsureRequest{}, &agentapi.PinRequest{}, &agentapi.EvictRequest{}} {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/v1/x", bytes.NewReader(body))
			refOf := func() string {
				switch q := req.(type) {
				case *agentapi.EnsureRequest:
					return q.Ref
				case *agentapi.PinRequest:
					return q.Ref
				default:
					return req.(*agentapi.EvictRequest).Ref
				}
			}
			ref, ok := decodeRef(rec, r, req, refOf)
			if ok {
				if ref.Bucket == "" || rec.Code != http.StatusOK || rec.Body.Len() != 0 {
					t.Fatalf("accepted %q as %+v but answered %d %q", body, ref, rec.Code, rec.Body)
				}
				continue
			}
			var e agentapi.ErrorResponse
			if rec.Code < 400 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" || e.Class == "" {
				t.Fatalf("refused %q with %d %q: want a 4xx with a JSON error and class", body, rec.Code, rec.Body)
			}
		}
	})
}
