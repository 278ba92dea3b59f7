package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// clusterStatus prints the ModelCaches' status, then which nodes hold which
// model, from the Nodes' warm labels (any machine with a kubeconfig that may
// list nodes and ModelCaches).
func clusterStatus(ctx context.Context, w io.Writer, kubeconfig, output string, inCluster func() (*rest.Config, error)) error {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
	} else if cfg, err = inCluster(); err != nil {
		return fmt.Errorf("status --cluster needs the API server: not running in a cluster (%v) and no --kubeconfig", err)
	}
	cfg.UserAgent = "modelcache-agent/" + buildinfo.Version(version)
	core, err := typedcorev1.NewForConfig(cfg)
	if err != nil {
		return err
	}
	v, err := prefetch.ReadClusterView(ctx, core.Nodes())
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	caches, cacheErr := readModelCaches(ctx, dyn)
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			prefetch.ClusterView
			ModelCaches []v1alpha1.ModelCache `json:"modelCaches"`
		}{v, caches})
	}
	switch {
	case cacheErr != nil:
		fmt.Fprintf(w, "ModelCaches: not read (%v)\n\n", cacheErr)
	case len(caches) > 0:
		printModelCaches(w, caches)
	}
	fmt.Fprintf(w, "Nodes: %d, models ready on at least one: %d\n\n", v.Nodes, len(v.Models))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tREADY\tNODES")
	for _, m := range v.Models {
		nodes := m.Ready
		more := ""
		if len(nodes) > 5 {
			nodes, more = nodes[:5], fmt.Sprintf(", … (%d more)", len(m.Ready)-5)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s%s\n", m.Ref, len(m.Ready), v.Nodes, strings.Join(nodes, ", "), more)
	}
	return tw.Flush()
}

// readModelCaches lists the ModelCaches of every namespace; none when their
// CRD is not installed.
func readModelCaches(ctx context.Context, dyn dynamic.Interface) ([]v1alpha1.ModelCache, error) {
	var out []v1alpha1.ModelCache
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := dyn.Resource(v1alpha1.ModelCaches).List(ctx, opts)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list modelcaches: %w", err)
		}
		for _, u := range list.Items {
			var mc v1alpha1.ModelCache
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mc); err != nil {
				return nil, fmt.Errorf("modelcache %s/%s: %w", u.GetNamespace(), u.GetName(), err)
			}
			mc.ManagedFields = nil
			out = append(out, mc)
		}
		if list.GetContinue() == "" {
			return out, nil
		}
		opts.Continue = list.GetContinue()
	}
}

// printModelCaches prints one line per ModelCache, with its nodes that are
// not ready (at most 5) and how far they are.
func printModelCaches(w io.Writer, caches []v1alpha1.ModelCache) {
	fmt.Fprintf(w, "ModelCaches: %d\n\n", len(caches))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tMODEL\tREADY\tREVISION\tSIZE\tNOT READY")
	for _, mc := range caches {
		var notReady []string
		for _, n := range mc.Status.Nodes {
			if n.State == v1alpha1.StateReady {
				continue
			}
			s := n.Node + " " + n.State
			if n.State == v1alpha1.StateFetching && n.Bytes > 0 {
				s += fmt.Sprintf(" %d%%", n.DoneBytes*100/n.Bytes)
			}
			notReady = append(notReady, s)
		}
		if len(notReady) > 5 {
			notReady = append(notReady[:5], fmt.Sprintf("… (%d more)", len(notReady)-5))
		}
		ready := mc.Status.Ready
		if ready == "" {
			ready = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mc.Namespace, mc.Name, mc.Spec.Model, ready,
			orDash(mc.Status.Revision), orDash(mc.Status.Size), strings.Join(notReady, ", "))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
