//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestLeastPrivilege checks what the running modelcache containers got from
// deploy/ (issue 6 item 7), on the processes themselves as the node's kernel
// sees them, not only in the pod specs: only csi-plugin in node mode is
// privileged; the cache-agent runs with no capability at all, no privilege
// escalation and a seccomp filter; the provisioner runs as a non-root user
// with no capability; every root filesystem is read-only.
func TestLeastPrivilege(t *testing.T) {
	e := newEnv(t)
	pods, err := e.kube.CoreV1().Pods("modelcache").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=modelcache"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("modelcache pods: %v (%d)", err, len(pods.Items))
	}
	type want struct {
		privileged bool // every capability, no seccomp filter
		nonRoot    bool
	}
	wants := map[string]want{
		"cache-agent":           {},
		"csi-plugin":            {privileged: true},
		"modelcache-controller": {nonRoot: true},
	}
	seen := map[string]bool{}
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			w, ok := wants[cs.Name]
			if !ok {
				t.Errorf("pod %s: container %s is not known to this test", p.Name, cs.Name)
				continue
			}
			seen[cs.Name] = true
			c := specOf(&p, cs.Name)
			if priv := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged; priv != w.privileged {
				t.Errorf("%s/%s: privileged=%v in the spec, want %v", p.Name, cs.Name, priv, w.privileged)
			}
			pr, err := containerProcess(strings.TrimPrefix(cs.ContainerID, "containerd://"))
			if err != nil {
				t.Errorf("%s/%s: %v", p.Name, cs.Name, err)
				continue
			}
			t.Logf("%s/%s: pid %d uid %d CapEff %016x NoNewPrivs %d Seccomp %d root %q",
				p.Name, cs.Name, pr.pid, pr.uid, pr.capEff, pr.noNewPrivs, pr.seccomp, pr.rootOpts)
			switch {
			case w.privileged:
				if pr.capEff&(1<<21) == 0 { // CAP_SYS_ADMIN: mount(2)
					t.Errorf("%s/%s: no CAP_SYS_ADMIN, it cannot mount", p.Name, cs.Name)
				}
			default:
				if pr.capEff != 0 {
					t.Errorf("%s/%s: effective capabilities %016x, want none", p.Name, cs.Name, pr.capEff)
				}
				if pr.noNewPrivs != 1 {
					t.Errorf("%s/%s: NoNewPrivs %d, want 1 (allowPrivilegeEscalation: false)", p.Name, cs.Name, pr.noNewPrivs)
				}
				if pr.seccomp != 2 {
					t.Errorf("%s/%s: Seccomp %d, want 2 (a RuntimeDefault filter)", p.Name, cs.Name, pr.seccomp)
				}
			}
			if w.nonRoot && pr.uid == 0 {
				t.Errorf("%s/%s: runs as root", p.Name, cs.Name)
			}
			if !strings.HasPrefix(pr.rootOpts, "ro") {
				t.Errorf("%s/%s: root filesystem mounted %q, want read-only", p.Name, cs.Name, pr.rootOpts)
			}
		}
	}
	for name := range wants {
		if !seen[name] {
			t.Errorf("no running container %s", name)
		}
	}
}

func specOf(p *corev1.Pod, name string) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i]
		}
	}
	return &corev1.Container{}
}

type process struct {
	pid                 int
	uid                 int
	capEff              uint64
	noNewPrivs, seccomp int
	rootOpts            string // mount options of its "/"
}

// containerProcess finds the main process of a container on this host: the
// lowest pid whose cgroup path names the container ID (kubelet runs with
// the cgroupfs driver here), and reads its credentials from /proc.
func containerProcess(id string) (*process, error) {
	if id == "" {
		return nil, fmt.Errorf("no container ID")
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	best := -1
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cgroup")
		if err != nil || !strings.Contains(string(b), id) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		if best < 0 || pid < best {
			best = pid
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("no process in a cgroup of container %s", id)
	}
	pr := &process{pid: best}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", best))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "Uid":
			pr.uid, _ = strconv.Atoi(f[1]) // effective
		case "CapEff":
			pr.capEff, _ = strconv.ParseUint(f[0], 16, 64)
		case "NoNewPrivs":
			pr.noNewPrivs, _ = strconv.Atoi(f[0])
		case "Seccomp":
			pr.seccomp, _ = strconv.Atoi(f[0])
		}
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", best))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			pr.rootOpts = f[5] // the last "/" mount is the one in effect
		}
	}
	return pr, nil
}
