package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/modelcache/modelcache/internal/buildinfo"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// clusterStatus prints which nodes hold which model, from the Nodes' warm
// labels (any machine with a kubeconfig that may list nodes).
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
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
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
