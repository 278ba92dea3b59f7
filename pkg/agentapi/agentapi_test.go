package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

func TestCredentialsNeverPrintTheSecret(t *testing.T) {
	c := agentapi.Credentials{AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "very-secret", SessionToken: "token-secret"}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "creds", c, "ptr", &c)
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v", c, c, c), fmt.Sprintf("%+v", &agentapi.Access{Credentials: &c}), logs.String()} {
		if strings.Contains(s, "very-secret") || strings.Contains(s, "token-secret") || strings.Contains(s, "AKIAEXAMPLE") {
			t.Errorf("printed a key: %s", s)
		}
	}
	if c.Validate() != nil || (agentapi.Credentials{AccessKeyID: "a"}).Validate() == nil {
		t.Error("Validate: want a full pair accepted and half a pair refused")
	}
}

func TestServiceAccountKeyNeverPrints(t *testing.T) {
	c := agentapi.Credentials{ServiceAccountKey: `{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nsecret-key-bytes"}`}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "creds", c, "ptr", &c)
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v", c, c, c), fmt.Sprintf("%+v", &agentapi.Access{Credentials: &c}), logs.String()} {
		if strings.Contains(s, "secret-key-bytes") || strings.Contains(s, "PRIVATE") {
			t.Errorf("printed the key: %s", s)
		}
	}
	if c.Validate() != nil {
		t.Errorf("a service account key alone: %v", c.Validate())
	}
}

// serve answers every request with status and body on a unix socket.
func serve(t *testing.T, status int, body any) *agentapi.Client {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := agentapi.NewClient(sock)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestClientTurnsClassesIntoSentinels: every class the agent answers comes
// back as its sentinel with the agent's message; a class this client does
// not know (a newer agent's) is internal.
func TestClientTurnsClassesIntoSentinels(t *testing.T) {
	for _, c := range []struct {
		class  string
		status int
		want   error
	}{
		{agentapi.ClassInvalid, http.StatusBadRequest, agentapi.ErrInvalid},
		{agentapi.ClassNotFound, http.StatusNotFound, agentapi.ErrNotFound},
		{agentapi.ClassAccessDenied, http.StatusForbidden, agentapi.ErrAccessDenied},
		{agentapi.ClassUnreachable, http.StatusBadGateway, agentapi.ErrUnreachable},
		{agentapi.ClassNoSpace, http.StatusInsufficientStorage, agentapi.ErrNoSpace},
		{agentapi.ClassPinned, http.StatusConflict, agentapi.ErrPinned},
		{agentapi.ClassChanged, http.StatusConflict, agentapi.ErrChanged},
		{agentapi.ClassUnavailable, http.StatusServiceUnavailable, agentapi.ErrUnavailable},
		{agentapi.ClassInternal, http.StatusInternalServerError, agentapi.ErrInternal},
		{"from_the_future", http.StatusInternalServerError, agentapi.ErrInternal},
	} {
		if got := agentapi.HTTPStatus(c.class); got != c.status {
			t.Errorf("HTTPStatus(%q) = %d, want %d", c.class, got, c.status)
		}
		client := serve(t, c.status, agentapi.ErrorResponse{Error: "the agent's words", Class: c.class})
		_, err := client.Evict(context.Background(), "s3://b/m")
		if !errors.Is(err, c.want) || err.Error() != "the agent's words" {
			t.Errorf("class %q: got %v, want %v with the agent's message", c.class, err, c.want)
		}
	}
}
