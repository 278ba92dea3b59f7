package prefetch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// The cluster view gathers, across pages of Nodes, the models each node's
// agent labels ready; an annotation entry whose label is missing does not
// count.
func TestReadClusterView(t *testing.T) {
	kube := kubetest.Start(t).Client(t)
	ctx := context.Background()
	tag := fmt.Sprint(time.Now().UnixNano() % 100000)
	a, b := "s3://models/view-a-"+tag, "hf://org/view-b-"+tag
	key := func(s string) string {
		r, err := model.ParseRef(s)
		if err != nil {
			t.Fatal(err)
		}
		return prefetch.LabelKey(r)
	}
	mk := func(name string, refs []string, labelled []string) {
		ann := map[string]string{}
		labels := map[string]string{}
		for _, r := range refs {
			ann[r] = key(r)
		}
		for _, r := range labelled {
			labels[key(r)] = prefetch.LabelReady
		}
		js, _ := json.Marshal(ann)
		_, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			Annotations: map[string]string{prefetch.AnnotationModels: string(js)}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}) })
	}
	for i := range 3 {
		mk(fmt.Sprintf("view-%s-%d", tag, i), []string{a}, []string{a})
	}
	mk("view-"+tag+"-b", []string{a, b}, []string{b}) // a named but not labelled
	for i := range 505 - 4 {                          // more than one page of 500
		mk(fmt.Sprintf("view-%s-empty-%d", tag, i), nil, nil)
	}
	v, err := prefetch.ReadClusterView(ctx, kube.CoreV1().Nodes())
	if err != nil {
		t.Fatal(err)
	}
	if v.Nodes < 505 {
		t.Errorf("%d nodes, want at least the 505 made", v.Nodes)
	}
	got := map[string][]string{}
	for _, m := range v.Models {
		got[m.Ref] = m.Ready
	}
	if want := []string{"view-" + tag + "-0", "view-" + tag + "-1", "view-" + tag + "-2"}; !slices.Equal(got[a], want) {
		t.Errorf("%s ready on %q, want %q", a, got[a], want)
	}
	if want := []string{"view-" + tag + "-b"}; !slices.Equal(got[b], want) {
		t.Errorf("%s ready on %q, want %q", b, got[b], want)
	}
}
