package modelstatus_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/modelstatus"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// childEnv names the kubeconfig with which the test binary, started again
// by TestWriteRate, runs only the status controller: its CPU is then its
// own, apart from the simulated nodes'.
const childEnv = "MODELSTATUS_CHILD_KUBECONFIG"

func TestMain(m *testing.M) {
	if kc := os.Getenv(childEnv); kc != "" {
		os.Exit(runChild(kc))
	}
	kubetest.Main(m)
}

// runChild runs the status controller as modelcache-controller does (the
// client's default rate limits) until its stdin closes.
func runChild(kubeconfig string) int {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	// SCALE_CPUPROFILE: where the controller's CPU goes, for go tool pprof.
	if f := os.Getenv("SCALE_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := modelstatus.New(kube, dyn, modelstatus.Options{Logger: log}).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// scaleParams come from the environment; the defaults are a run small
// enough for `make test`. `make scale` runs 1,000 nodes × 20 models.
type scaleParams struct {
	Nodes, Models int
	Fetch         time.Duration // one model's download
	Parallel      int           // downloads at once on a node (the agent's --max-downloads)
	Rollout       time.Duration // nodes start within this window
	Steady        time.Duration // measured after every status is ready
	Interval      time.Duration // the reporters' progress interval (the agent's default)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDur(k string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestWriteRate: N simulated nodes fetch M models each, every one
// reporting through a real prefetch.Reporter (its ModelCacheNode) and
// patching its Node's warm label per model as the agent does; the real
// status controller, in its own process, keeps M ModelCaches' status. It
// prints the API server's writes per minute during the rollout and after
// it, by resource, and the CPU of the controller and of the API server;
// with SCALE_OUT set it writes them there (make scale). It fails if any
// status does not reach N/N, or if anything is written once every node is
// ready and nothing changes.
func TestWriteRate(t *testing.T) {
	p := scaleParams{
		Nodes: envInt("SCALE_NODES", 20), Models: envInt("SCALE_MODELS", 20),
		Fetch: envDur("SCALE_FETCH", 2*time.Second), Parallel: envInt("SCALE_PARALLEL", 2),
		Rollout: envDur("SCALE_ROLLOUT", 5*time.Second), Steady: envDur("SCALE_STEADY", 10*time.Second),
		Interval: envDur("SCALE_INTERVAL", 15*time.Second),
	}
	ks := kubetest.Start(t)
	ks.InstallCRDs(t)
	cfg := rest.CopyConfig(ks.Config)
	cfg.QPS = -1 // each simulated node is its own agent, with its own limits
	kube := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("scale-%d", time.Now().UnixNano()%100000)

	refs := make([]model.Ref, p.Models)
	for i := range refs {
		r, err := model.ParseRef(fmt.Sprintf("s3://%s/model-%02d?source=test", run, i))
		if err != nil {
			t.Fatal(err)
		}
		refs[i] = r
	}
	createModelCaches(t, dyn, run, refs)
	nodes := createNodes(t, kube, run, p.Nodes, p.Models)

	child := startChild(t, ks)
	apiPID := ks.PID("kube-apiserver")
	before := writes(t, kube)
	cpu0, api0 := cpuSeconds(t, child.Process.Pid), cpuSeconds(t, apiPID)
	start := time.Now()

	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { n.run(ctx, t, kube, dyn, refs, p) })
	}
	wg.Wait()
	fetched := time.Since(start)
	waitAllReady(t, dyn, run, p)
	rollout := time.Since(start)
	mid := writes(t, kube)
	cpu1, api1 := cpuSeconds(t, child.Process.Pid), cpuSeconds(t, apiPID)

	time.Sleep(p.Steady)
	after := writes(t, kube)
	cpu2, api2 := cpuSeconds(t, child.Process.Pid), cpuSeconds(t, apiPID)

	rw, sw := diff(before, mid), diff(mid, after)
	var out strings.Builder
	fmt.Fprintf(&out, "%d nodes × %d models (%s a model, %d at once, nodes starting within %s, progress every %s)\n\n",
		p.Nodes, p.Models, p.Fetch, p.Parallel, p.Rollout, p.Interval)
	fmt.Fprintf(&out, "| phase | seconds | writes | writes/min | by resource | controller CPU-s | API server CPU-s |\n|---|---:|---:|---:|---|---:|---:|\n")
	fmt.Fprintf(&out, "| rollout (every node fetching, until every status is %d/%d) | %.1f | %d | %.0f | %s | %.2f | %.2f |\n",
		p.Nodes, p.Nodes, rollout.Seconds(), rw.total(), perMin(rw.total(), rollout), rw, cpu1-cpu0, api1-api0)
	fmt.Fprintf(&out, "| steady (all ready, nothing changes) | %.1f | %d | %.0f | %s | %.2f | %.2f |\n",
		p.Steady.Seconds(), sw.total(), perMin(sw.total(), p.Steady), sw, cpu2-cpu1, api2-api1)
	fmt.Fprintf(&out, "\nThe downloads themselves took %.1f s; the statuses were all %d/%d %.1f s later.\n",
		fetched.Seconds(), p.Nodes, p.Nodes, (rollout - fetched).Seconds())
	t.Log("\n" + out.String())
	summary := fmt.Sprintf("%d nodes × %d models: a rollout of every model to every node cost %d API writes in %.1f min "+
		"(%.0f/min; %s) and the status controller %.1f CPU-s; once all were ready, %d writes in %.0f s and %.2f CPU-s.",
		p.Nodes, p.Models, rw.total(), rollout.Minutes(), perMin(rw.total(), rollout), rw, cpu1-cpu0,
		sw.total(), p.Steady.Seconds(), cpu2-cpu1)
	t.Log(summary)
	for env, text := range map[string]string{"SCALE_OUT": out.String(), "SCALE_SUMMARY": summary + "\n"} {
		if f := os.Getenv(env); f != "" {
			if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if sw.total() != 0 {
		t.Errorf("%d writes while nothing changed (%s); want none", sw.total(), sw)
	}
}

// simNode is one simulated node: what its agent holds and fetches.
type simNode struct {
	name string
	uid  types.UID
	mu   sync.Mutex
	done []int64 // bytes of each model fetched so far
	size int64
}

func (n *simNode) report(refs []model.Ref) v1alpha1.ModelCacheNodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	var st v1alpha1.ModelCacheNodeStatus
	for i, r := range refs {
		m := v1alpha1.NodeModel{Ref: r.Location().String(), Bytes: n.size}
		switch {
		case n.done[i] < 0:
			continue
		case n.done[i] >= n.size:
			m.State, m.Revision, m.Current = v1alpha1.StateReady, fmt.Sprintf("rev%02d", i), true
		default:
			m.State, m.DoneBytes = v1alpha1.StateFetching, n.done[i]
		}
		st.Models = append(st.Models, m)
	}
	return st
}

// run fetches every model as the agent would: all queued at once, Parallel
// downloading, a label patch on the Node and a report kick as each ends.
func (n *simNode) run(ctx context.Context, t *testing.T, kube kubernetes.Interface, dyn dynamic.Interface, refs []model.Ref, p scaleParams) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rep := prefetch.NewReporter(dyn, n.name, p.Interval, log, func() (types.UID, error) { return n.uid, nil },
		func() v1alpha1.ModelCacheNodeStatus { return n.report(refs) })
	go rep.Run(ctx) // on through the steady phase, until the test ends
	time.Sleep(rand.N(p.Rollout))
	n.mu.Lock()
	for i := range n.done {
		n.done[i] = 0 // queued: the report shows them fetching
	}
	n.mu.Unlock()
	rep.Kick()
	sem := make(chan struct{}, p.Parallel)
	var wg sync.WaitGroup
	for i := range refs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			const steps = 10
			for s := 1; s <= steps; s++ {
				time.Sleep(p.Fetch / steps)
				n.mu.Lock()
				n.done[i] = n.size * int64(s) / steps
				n.mu.Unlock()
			}
			label := prefetch.LabelKey(refs[i])
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{label: prefetch.LabelReady}}})
			// A patch the API server times out is tried again, as the
			// agent's next reconcile would.
			err := retry.OnError(wait.Backoff{Duration: time.Second, Factor: 2, Steps: 5}, func(error) bool { return true }, func() error {
				_, err := kube.CoreV1().Nodes().Patch(ctx, n.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
				return err
			})
			if err != nil {
				t.Errorf("patch node %s: %v", n.name, err)
			}
			rep.Kick()
		})
	}
	wg.Wait()
}

func createNodes(t *testing.T, kube kubernetes.Interface, run string, count, models int) []*simNode {
	t.Helper()
	var nodes []*simNode
	for i := range count {
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-node-%04d", run, i), Labels: map[string]string{"pool": run}}}
		created, err := kube.CoreV1().Nodes().Create(context.Background(), obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Nothing queued yet: -1 for every model.
		n := &simNode{name: created.Name, uid: created.UID, size: 15 << 30, done: slices.Repeat([]int64{-1}, models)}
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Nodes().DeleteCollection(context.Background(), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "pool=" + run})
	})
	return nodes
}

func createModelCaches(t *testing.T, dyn dynamic.Interface, ns string, refs []model.Ref) {
	t.Helper()
	ctx := context.Background()
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	if _, err := dyn.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, r := range refs {
		mc := v1alpha1.ModelCache{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: v1alpha1.KindModelCache},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("model-%02d", i), Namespace: ns},
			Spec:       v1alpha1.ModelCacheSpec{Model: r.String(), NodeSelector: map[string]string{"pool": ns}}}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&mc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(v1alpha1.ModelCaches).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func waitAllReady(t *testing.T, dyn dynamic.Interface, ns string, p scaleParams) {
	t.Helper()
	want := fmt.Sprintf("%d/%d", p.Nodes, p.Nodes)
	var last string
	for deadline := time.Now().Add(2*time.Minute + p.Rollout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := dyn.Resource(v1alpha1.ModelCaches).Namespace(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, u := range list.Items {
			r, _, _ := unstructured.NestedString(u.Object, "status", "ready")
			if r == want {
				ready++
			} else {
				last = u.GetName() + " " + r
			}
		}
		if ready == p.Models {
			return
		}
	}
	t.Fatalf("not every ModelCache is %s: %s", want, last)
}

func startChild(t *testing.T, ks *kubetest.Server) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+ks.Kubeconfig(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("status controller: %v: %s", err, stderr.String())
		}
	})
	return cmd
}

// cpuSeconds is the user + system CPU time of process pid so far.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// writeCounts is the API server's count of write requests by resource.
type writeCounts map[string]int

func (w writeCounts) total() int {
	n := 0
	for _, v := range w {
		n += v
	}
	return n
}

func (w writeCounts) String() string {
	var keys []string
	for k, v := range w {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, w[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func diff(a, b writeCounts) writeCounts {
	out := writeCounts{}
	for k, v := range b {
		out[k] = v - a[k]
	}
	return out
}

func perMin(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

var requestLine = regexp.MustCompile(`^apiserver_request_total\{(.*)\} ([0-9.e+]+)$`)
var labelPair = regexp.MustCompile(`(\w+)="([^"]*)"`)

// writes reads the API server's apiserver_request_total for the writes
// (create, update, patch, delete) of nodes and modelcache.io resources.
func writes(t *testing.T, kube kubernetes.Interface) writeCounts {
	t.Helper()
	raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := writeCounts{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		l := map[string]string{}
		for _, kv := range labelPair.FindAllStringSubmatch(m[1], -1) {
			l[kv[1]] = kv[2]
		}
		switch l["verb"] {
		case "POST", "PUT", "PATCH", "APPLY", "DELETE":
		default:
			continue
		}
		if l["resource"] != "nodes" && l["group"] != v1alpha1.Group {
			continue
		}
		key := l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		out[key] += int(v)
	}
	return out
}
