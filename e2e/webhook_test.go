//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// TestWebhook: with the pod webhook on (deploy/e2e includes deploy/webhook;
// the API server reaches the controller's Service through its endpoints),
// a pod with a modelcache volume is stored with a preferred node affinity
// for its model's warm-node label, without one written in the pod; once the
// node holds the model, the agent puts that label on the node, so the next
// pod of the model is sent to it.
func TestWebhook(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.deleteTestPods)
	ref := "hf://e2e-org/tiny-llm@main?source=hub&include=*.json"
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	key := prefetch.LabelKey(r)
	pod := modelPod("webhook-a", ref)
	if pod.Spec.Affinity != nil {
		t.Fatal("the test pod has an affinity of its own")
	}
	p, d := e.createAndWaitReady(t, pod, 3*time.Minute)
	t.Logf("webhook-a Ready after %.3fs", d.Seconds())
	var found bool
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		for _, term := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			for _, x := range term.Preference.MatchExpressions {
				found = found || (x.Key == key && len(x.Values) == 1 && x.Values[0] == prefetch.LabelReady)
			}
		}
	}
	if !found {
		t.Fatalf("the stored pod has no preferred term for %s=ready: %+v", key, p.Spec.Affinity)
	}
	// The model came with the pod's volume, not a prefetch annotation; the
	// agent labels it all the same (at its next resync at the latest).
	deadline := time.Now().Add(90 * time.Second)
	for {
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels[key] == prefetch.LabelReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s has no label %s=ready 90 s after the model was mounted (labels: %v)", n.Name, key, n.Labels)
		}
		time.Sleep(time.Second)
	}
}
