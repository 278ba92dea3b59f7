package prefetch

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
)

// statusAgent is an Agent that only reports a fixed status: nodeReport
// reads nothing else.
type statusAgent struct {
	Agent
	s agentapi.StatusReport
}

func (a statusAgent) Status() agentapi.StatusReport { return a.s }

// A node with more models, failures and refused ModelCaches than a
// ModelCacheNode may list (the CRD's maxItems: the API server would refuse
// the whole report) and errors as long as a tenant's source makes them:
// the report stays within the bounds docs/security.md gives.
func TestNodeReportBounded(t *testing.T) {
	const n = v1alpha1.MaxNodeModels + 200
	long := "x" + strings.Repeat("é", 1000) // 2,001 bytes: byte 512 falls inside a rune
	var s agentapi.StatusReport
	for i := range n {
		s.Models = append(s.Models, agentapi.ModelStatus{Ref: fmt.Sprintf("s3://bucket/held%04d?source=s", i), Revision: "r1", SizeBytes: 1})
	}
	c := &Controller{agent: statusAgent{s: s}, tasks: map[string]*task{}, refused: map[string]error{}}
	for i := range n {
		c.tasks[fmt.Sprintf("s3://bucket/failed%04d?source=s", i)] = &task{err: errors.New(long)}
		c.refused[fmt.Sprintf("%s%s/ns/mc%04d", HolderPrefix, kindModelCache, i)] = errors.New(long)
	}
	st := c.nodeReport()

	if len(st.Models) != v1alpha1.MaxNodeModels || st.ModelsOmitted != 2*n-v1alpha1.MaxNodeModels {
		t.Errorf("models: %d listed, %d omitted; want %d and %d", len(st.Models), st.ModelsOmitted, v1alpha1.MaxNodeModels, 2*n-v1alpha1.MaxNodeModels)
	}
	// Failures sort first: a node's problems are what its report is read for.
	if st.Models[0].State != v1alpha1.StateFailed {
		t.Errorf("first listed model is %s, want a failed one", st.Models[0].State)
	}
	if len(st.Refused) != v1alpha1.MaxNodeModels {
		t.Errorf("refused: %d listed, want %d", len(st.Refused), v1alpha1.MaxNodeModels)
	}
	var errs []string
	for _, m := range st.Models {
		if m.Error != "" {
			errs = append(errs, m.Error)
		}
	}
	for _, r := range st.Refused {
		errs = append(errs, r.Error)
	}
	if len(errs) == 0 {
		t.Fatal("no error in the report")
	}
	for _, e := range errs {
		if len(e) > 512+len("…") || !utf8.ValidString(e) || !strings.HasSuffix(e, "…") {
			t.Fatalf("error of %d bytes (valid UTF-8: %v), want at most 512 and a mark that it was cut", len(e), utf8.ValidString(e))
		}
	}
}
