//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

// env is what e2e/run.sh hands the suite: the cluster, the S3 server, the
// agent's socket on the host and the kubelet root.
type env struct {
	kube        kubernetes.Interface
	ns          string
	s3          *minio.Client
	slowAddr    string // where the suite serves the throttled S3 proxy (source "slow")
	agent       *agentapi.Client
	kubeletRoot string
}

func mustEnv(t *testing.T, k string) string {
	t.Helper()
	v := os.Getenv(k)
	if v == "" {
		t.Skipf("%s is not set: run the suite through make e2e (e2e/run.sh)", k)
	}
	return v
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{ns: "default"}
	cfg, err := clientcmd.BuildConfigFromFlags("", mustEnv(t, "KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	if e.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	s3url := mustEnv(t, "MODELCACHE_E2E_S3")
	e.s3, err = minio.New(strings.TrimPrefix(s3url, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(mustEnv(t, "MODELCACHE_E2E_S3_ACCESS"), mustEnv(t, "MODELCACHE_E2E_S3_SECRET"), ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.slowAddr = mustEnv(t, "MODELCACHE_E2E_SLOW_ADDR")
	e.agent = agentapi.NewClient(mustEnv(t, "MODELCACHE_E2E_AGENT_SOCKET"))
	e.kubeletRoot = mustEnv(t, "MODELCACHE_E2E_KUBELET_ROOT")
	return e
}

// testModel is a model the suite uploads: file name → content.
type testModel struct {
	bucket, prefix string
	files          map[string][]byte
}

// newModel makes a model of one weights file of size bytes and two small
// JSON files, with pseudo-random content from seed.
func newModel(bucket, prefix string, size int, seed uint64) *testModel {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'e', '2', 'e'}))
	w := make([]byte, size)
	for i := 0; i+8 <= len(w); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			w[i+j] = byte(v >> (8 * j))
		}
	}
	return &testModel{bucket: bucket, prefix: prefix, files: map[string][]byte{
		"model.safetensors":    w,
		"config.json":          []byte(fmt.Sprintf(`{"model": %q, "seed": %d}`+"\n", prefix, seed)),
		"tokenizer/vocab.json": []byte(fmt.Sprintf(`{"a": 1, "b": 2, "seed": %d}`+"\n", seed)),
	}}
}

func (m *testModel) upload(t *testing.T, s3 *minio.Client) {
	t.Helper()
	ctx := context.Background()
	ok, err := s3.BucketExists(ctx, m.bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", m.bucket, err)
	}
	if !ok {
		if err := s3.MakeBucket(ctx, m.bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
			t.Fatalf("make bucket %s: %v", m.bucket, err)
		}
	}
	for name, b := range m.files {
		key := path.Join(m.prefix, name)
		if _, err := s3.PutObject(ctx, m.bucket, key, bytes.NewReader(b), int64(len(b)),
			minio.PutObjectOptions{DisableContentSha256: true, PartSize: 64 << 20}); err != nil {
			t.Fatalf("put s3://%s/%s: %v", m.bucket, key, err)
		}
	}
}

// sums is what `sha256sum` in the pod prints for the model, sorted by path.
func (m *testModel) sums(dir string) []string {
	var out []string
	for name, b := range m.files {
		s := sha256.Sum256(b)
		out = append(out, hex.EncodeToString(s[:])+"  "+path.Join(dir, name))
	}
	sort.Slice(out, func(i, j int) bool { return strings.Fields(out[i])[1] < strings.Fields(out[j])[1] })
	return out
}

func (m *testModel) size() int64 {
	var n int64
	for _, b := range m.files {
		n += int64(len(b))
	}
	return n
}

// readerScript is the test pods' command: checksum every file of the model
// (sorted by path), try two writes, report, then sleep.
const readerScript = `cd /model || exit 1
for f in $(find . -type f | sort); do sha256sum "/model/${f#./}"; done
grep " /model " /proc/mounts | sed 's/^/MOUNT /'
if out=$(echo x 2>&1 > /model/new-file); then echo "WRITE new-file: ok"; else echo "WRITE new-file: denied: $out"; fi
if out=$(echo x 2>&1 >> /model/config.json); then echo "WRITE config.json: ok"; else echo "WRITE config.json: denied: $out"; fi
echo READER-DONE
exec sleep 3600
`

// modelPod is a busybox pod with the model mounted at /model through an
// inline CSI volume.
func modelPod(name, ref string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "modelcache-e2e"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{
				Name:            "reader",
				Image:           "docker.io/library/busybox:1.35",
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"sh", "-c", readerScript},
				VolumeMounts:    []corev1.VolumeMount{{Name: "model", MountPath: "/model", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "model", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver:           "modelcache.csi.io",
				ReadOnly:         ptr(true),
				VolumeAttributes: map[string]string{"model": ref},
			}}}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// createAndWaitReady creates pod and returns it once Ready, with the time
// from the create call to the Ready condition as a watch saw it. The caller
// deletes the pod (deleteTestPods at the end of the test).
func (e *env) createAndWaitReady(t *testing.T, pod *corev1.Pod, timeout time.Duration) (*corev1.Pod, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pods := e.kube.CoreV1().Pods(e.ns)
	start := time.Now()
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	rv := created.ResourceVersion
	sel := fields.OneTermEqualSelector("metadata.name", pod.Name).String()
	for ctx.Err() == nil {
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: rv})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				// A watch error (e.g. a too old resourceVersion): start over from a fresh get.
				break
			}
			rv = p.ResourceVersion
			if podReady(p) {
				w.Stop()
				return p, time.Since(start)
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				w.Stop()
				t.Fatalf("pod %s ended (%s) before it was ready:\n%s", pod.Name, p.Status.Phase, e.describe(pod.Name))
			}
		}
		w.Stop()
		// The watch ended: check the pod as it is now, then watch again from there.
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil {
			if podReady(p) {
				return p, time.Since(start)
			}
			rv = p.ResourceVersion
		}
	}
	t.Fatalf("pod %s not ready after %v:\n%s", pod.Name, timeout, e.describe(pod.Name))
	return nil, 0
}

// deleteTestPods deletes every pod the suite made (label app=modelcache-e2e).
func (e *env) deleteTestPods() {
	l, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=modelcache-e2e"})
	if err != nil {
		return
	}
	for _, p := range l.Items {
		e.deletePod(p.Name)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// describe is a short account of a pod for failure messages: phase,
// container states and its events.
func (e *env) describe(name string) string {
	ctx := context.Background()
	var b strings.Builder
	p, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(&b, "  get pod: %v\n", err)
	} else {
		fmt.Fprintf(&b, "  phase %s, node %q\n", p.Status.Phase, p.Spec.NodeName)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "  container %s: ready=%v state=%+v\n", cs.Name, cs.Ready, cs.State)
		}
	}
	for _, ev := range e.events(name) {
		fmt.Fprintf(&b, "  event %s %s: %s\n", ev.Type, ev.Reason, ev.Message)
	}
	return b.String()
}

// events lists the events about pod name in the test namespace, oldest first.
func (e *env) events(name string) []corev1.Event {
	l, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Pod", "involvedObject.name": name}.String()})
	if err != nil {
		return nil
	}
	sort.Slice(l.Items, func(i, j int) bool { return eventTime(l.Items[i]).Before(eventTime(l.Items[j])) })
	return l.Items
}

func eventTime(ev corev1.Event) time.Time {
	if !ev.LastTimestamp.IsZero() {
		return ev.LastTimestamp.Time
	}
	return ev.EventTime.Time
}

// readerOutput waits for the reader script to finish its report and returns
// its lines.
func (e *env) readerOutput(t *testing.T, name string) []string {
	t.Helper()
	var out string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 60*time.Second, true,
		func(ctx context.Context) (bool, error) {
			b, err := e.kube.CoreV1().Pods(e.ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				return false, nil
			}
			out = string(b)
			return strings.Contains(out, "READER-DONE"), nil
		})
	if err != nil {
		t.Fatalf("pod %s: no complete report in its log: %v\nlog so far:\n%s", name, err, out)
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}

// checkReader asserts the pod read exactly the model's bytes and could not write.
func (e *env) checkReader(t *testing.T, name string, m *testModel) {
	t.Helper()
	lines := e.readerOutput(t, name)
	want := m.sums("/model")
	var got, writes, mounts []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "WRITE "):
			writes = append(writes, l)
		case strings.HasPrefix(l, "MOUNT "):
			mounts = append(mounts, l)
		case l == "READER-DONE":
		default:
			got = append(got, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pod %s read other bytes than the model's:\n got:\n  %s\n want:\n  %s", name,
			strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// "MOUNT /dev/vda /model ext4 ro,relatime,… 0 0" as the pod sees it.
	if len(mounts) != 1 || len(strings.Fields(mounts[0])) < 5 {
		t.Errorf("pod %s: want one mount at /model in its /proc/mounts, got %q", name, mounts)
	} else if opts := strings.Split(strings.Fields(mounts[0])[4], ","); opts[0] != "ro" {
		t.Errorf("pod %s: /model is not mounted read-only: %s", name, mounts[0])
	}
	if len(writes) != 2 {
		t.Errorf("pod %s: want two write reports, got %q", name, writes)
	}
	for _, w := range writes {
		if !strings.Contains(w, "denied") || !strings.Contains(w, "Read-only file system") {
			t.Errorf("pod %s: a write to the model did not fail with EROFS: %s", name, w)
		}
	}
}

// deletePod deletes a pod and waits until it is gone (kubelet removes the
// object only after its volumes are torn down).
func (e *env) deletePod(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pods := e.kube.CoreV1().Pods(e.ns)
	err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// mountsOf returns the mount points in the host's mount table under the
// kubelet directory of pod uid.
func (e *env) mountsOf(t *testing.T, uid string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dir := path.Join(e.kubeletRoot, "pods", uid) + "/"
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, l)
		}
	}
	return out
}

// pinsOn returns the agent's pins on every revision of the model ref names
// (ref without options, as the agent's status lists it).
func (e *env) pinsOn(t *testing.T, ref string) []string {
	t.Helper()
	st, err := e.agent.Status(context.Background())
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	var pins []string
	for _, m := range st.Models {
		if sameModel(m.Ref, ref) {
			pins = append(pins, m.Pins...)
		}
	}
	return pins
}

func sameModel(a, b string) bool {
	strip := func(s string) string { s, _, _ = strings.Cut(s, "?"); return strings.TrimSuffix(s, "/") }
	return strip(a) == strip(b)
}
