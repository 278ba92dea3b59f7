package agent

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
)

// fill sets every field of v, nested structs and slices included, to a value
// that differs from its zero and from other fields', so that a field the
// mapping functions forget shows in the JSON instead of hiding as omitted.
func fill(v reflect.Value, seed *int) {
	*seed++
	n := *seed
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Float64:
		v.SetFloat(float64(n) + 0.5)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), seed)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i), seed)
		}
	default:
		panic("fill: no case for " + v.Type().String())
	}
}

func filled[T any]() T {
	var v T
	seed := 0
	fill(reflect.ValueOf(&v).Elem(), &seed)
	return v
}

func sameJSON(t *testing.T, what string, old, wire any) {
	t.Helper()
	a, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s: the wire type encodes differently from the store's\nstore: %s\nwire:  %s", what, a, b)
	}
}

// TestWireTypesEncodeLikeTheStores: the agentapi copies of the store's
// reports, and the API's credentials, are byte-for-byte the JSON that the
// agent sent when its answers embedded the store's types, so a CLI or plugin
// of either side of the split reads the other's answers.
func TestWireTypesEncodeLikeTheStores(t *testing.T) {
	st, parts := filled[cache.Status](), filled[cache.Partials]()
	jobs := []agentapi.Progress{{Ref: "s3://b/m", State: agentapi.StateReady}}
	// The status answer as it was before pkg/agentapi.
	old := struct {
		cache.Status
		Partials cache.Partials      `json:"partials"`
		Jobs     []agentapi.Progress `json:"jobs"`
	}{st, parts, jobs}
	sameJSON(t, "StatusReport", old, agentapi.StatusReport{Status: wireStatus(st), Partials: wirePartials(parts), Jobs: jobs})
	sameJSON(t, "empty StatusReport", struct {
		cache.Status
		Partials cache.Partials      `json:"partials"`
		Jobs     []agentapi.Progress `json:"jobs"`
	}{}, agentapi.StatusReport{Status: wireStatus(cache.Status{}), Partials: wirePartials(cache.Partials{})})

	rep := filled[cache.VerifyReport]()
	sameJSON(t, "VerifyReport", rep, wireVerifyReport(rep))
	sameJSON(t, "empty VerifyReport", cache.VerifyReport{}, wireVerifyReport(cache.VerifyReport{}))
}
