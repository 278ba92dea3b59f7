package agent_test

import (
	"fmt"
	"testing"

	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Errors of every source get the API's classes, as S3's do.
func TestClassifySourceErrors(t *testing.T) {
	for class, err := range map[string]error{
		agentapi.ClassNotFound:     &source.Error{Class: source.ErrNotFound, Where: "hf://o/m", Op: "list", Msg: "404"},
		agentapi.ClassAccessDenied: &source.Error{Class: source.ErrAccessDenied, Where: "hf://o/m", Op: "list", Msg: "gated"},
		agentapi.ClassUnreachable:  fmt.Errorf("fetch: %w", &source.Error{Class: source.ErrProtocol, Where: "hf://o/m", Op: "read", Msg: "bad range"}),
		agentapi.ClassChanged:      &source.Error{Class: source.ErrChanged, Where: "hf://o/m/w", Op: "fetch", Msg: "sha256"},
		agentapi.ClassInvalid:      fmt.Errorf("include: %w", model.ErrInvalidPattern),
	} {
		if got := agent.Classify(err); got != class {
			t.Errorf("Classify(%v) = %s, want %s", err, got, class)
		}
	}
}
