package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadSourcesAndKeyFiles(t *testing.T) {
	e := newEnv(t)
	e.srv.Put(t, "models", "s/a", []byte("x"))
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "secret"), 0o700)
	writeFile(t, filepath.Join(dir, "secret", "key"), e.srv.AccessKey+"\n")
	writeFile(t, filepath.Join(dir, "secret", "secret"), e.srv.SecretKey+"\n")
	path := filepath.Join(dir, "sources.yaml")
	writeFile(t, path, fmt.Sprintf(`sources:
  inline:
    endpoint: %[1]s
    region: us-east-1
    pathStyle: true
    accessKeyID: %[2]s
    secretAccessKey: %[3]s
  files:
    endpoint: %[1]s/
    pathStyle: true
    accessKeyIDFile: secret/key
    secretAccessKeyFile: %[4]s
  aws: {region: eu-west-1}
`, e.proxy.URL(), e.srv.AccessKey, e.srv.SecretKey, filepath.Join(dir, "secret", "secret")))
	sources, err := fetch.LoadSources(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != 3 || sources["files"].AccessKeyIDFile != filepath.Join(dir, "secret", "key") ||
		sources["files"].Endpoint != e.proxy.URL() || sources["aws"].Region != "eu-west-1" {
		t.Fatalf("loaded %v", sources)
	}
	f, err := fetch.New(sources)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"inline", "files"} {
		if _, err := f.List(context.Background(), mustRef(t, "s3://models/s?source="+name), nil); err != nil {
			t.Fatalf("source %s: %v", name, err)
		}
	}
}

func TestLoadSourcesRefusesMistakes(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, frag string }{
		{"sources:\n  s:\n    secretKey: hunter2\n", "secretKey"}, // misspelt: must not fall back to the default chain
		{"sources:\n  s:\n    accessKeyID: k\n", "secret"},
		{"sources:\n  s:\n    accessKeyID: k\n    accessKeyIDFile: f\n    secretAccessKey: hunter2\n", "use one"},
		{"sources:\n  s:\n    accessKeyIDFile: /nonexistent/key\n    secretAccessKey: hunter2\n", "/nonexistent/key"},
		{"sources:\n  'bad name':\n    region: us-east-1\n", "bad name"},
		{"sources:\n  s:\n    endpoint: ftp://x\n", "endpoint"},
		{"sources: [", "yaml"},
	} {
		path := filepath.Join(dir, "s.yaml")
		writeFile(t, path, c.yaml)
		_, err := fetch.LoadSources(path)
		if err == nil || !strings.Contains(err.Error(), c.frag) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: got %v; want an error mentioning %q without the secret", c.yaml, err, c.frag)
		}
	}
	if _, err := fetch.LoadSources(filepath.Join(dir, "none.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	writeFile(t, filepath.Join(dir, "empty.yaml"), "")
	if s, err := fetch.LoadSources(filepath.Join(dir, "empty.yaml")); err != nil || len(s) != 0 {
		t.Errorf("empty file: %v %v", s, err)
	}
}

func TestSourceNeverShowsSecrets(t *testing.T) {
	s := fetch.Source{Endpoint: "http://minio:9000", AccessKeyID: "AKIAEXAMPLEKEY", SecretAccessKey: "hunter2-secret"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("source", "src", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("source", "src", s)
	out := fmt.Sprintf("%v %+v %#v %s %q", s, s, s, s, s) + fmt.Sprint(map[string]fetch.Source{"a": s}) + buf.String()
	for _, secret := range []string{"hunter2-secret", "AKIAEXAMPLEKEY"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret in output: %s", out)
		}
	}
	if !strings.Contains(out, "static keys") || !strings.Contains(out, "http://minio:9000") {
		t.Fatalf("output lost the useful parts: %s", out)
	}
}

// A ref's endpoint must be on the operator's list, and the agent's own
// identity (here the default chain's keys in the environment) never reaches
// it: requests are unsigned unless the volume brings keys.
func TestRefEndpointAllowListAndNoAgentIdentity(t *testing.T) {
	h := s3test.StartHostile(t)
	h.Put("models", "d/a", []byte("x"))
	t.Setenv("AWS_ACCESS_KEY_ID", "AGENTIDENTITY")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "agent-secret")
	t.Setenv("AWS_SESSION_TOKEN", "agent-session")
	t.Setenv("AWS_CA_BUNDLE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ref := mustRef(t, "s3://models/d?endpoint="+h.Endpoint+"&region=us-east-1")

	closed, err := fetch.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = closed.List(context.Background(), ref, nil)
	if !errors.Is(err, fetch.ErrAccessDenied) || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("endpoint not on the list: %v", err)
	}
	if n := len(h.Seen()); n != 0 {
		t.Fatalf("%d requests reached an endpoint that is not allowed", n)
	}
	t.Log(err)

	open, err := fetch.New(nil, fetch.WithAllowedEndpoints([]string{h.Endpoint + "/"}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := open.List(context.Background(), ref, nil)
	if err != nil || len(m.Files) != 1 {
		t.Fatalf("allowed endpoint: %v %v", m, err)
	}
	vol := model.Credentials{AccessKeyID: "VOLUMEKEY", SecretAccessKey: "volume-secret"}
	if err := open.CheckAccess(context.Background(), ref, &vol); err != nil {
		t.Fatal(err)
	}
	var anon, withVol int
	for _, r := range h.Seen() {
		switch {
		case r.AccessKeyID == "" && r.SessionToken == "":
			anon++
		case r.AccessKeyID == "VOLUMEKEY" && r.SessionToken == "":
			withVol++
		default:
			t.Errorf("%s %s reached the endpoint as %q (token %q)", r.Method, r.Key, r.AccessKeyID, r.SessionToken)
		}
	}
	if anon == 0 || withVol == 0 {
		t.Fatalf("unsigned requests %d, with the volume's keys %d", anon, withVol)
	}
}

func TestDefaultCredentialChainEmptyIsAccessDenied(t *testing.T) {
	e := newEnv(t)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE",
		"AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	f, err := fetch.New(map[string]fetch.Source{"chain": {Endpoint: e.proxy.URL(), PathStyle: true}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.List(context.Background(), mustRef(t, "s3://models/d?source=chain"), nil)
	if !errors.Is(err, fetch.ErrAccessDenied) || !strings.Contains(err.Error(), "default credential chain") {
		t.Fatalf("got %v", err)
	}
	if e.proxy.Requests() != 0 {
		t.Fatalf("%d requests without credentials", e.proxy.Requests())
	}
	t.Log(err)
}
