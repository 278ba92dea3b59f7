package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/rest"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

func newPrefetchCmd(socket *string) *cobra.Command {
	var wait bool
	var timeout time.Duration
	var cached, warm bool
	cmd := &cobra.Command{
		Use:   "prefetch REF",
		Short: "Download a model onto this node",
		Long: `Download the model REF onto this node (or join its running download).

REF is s3://BUCKET/PREFIX with optional query options:
  source=NAME      a source of the agent's --sources-file (endpoint + credentials)
  endpoint=URL     an S3-compatible endpoint the operator allows (sources file endpoints:);
                   requests are unsigned unless a volume brings keys
  region=REGION    the bucket's region
  revision=HEX     an exact revision (manifest digest) instead of what the bucket holds

The bucket is listed again, so a changed model becomes a new revision; files the
cache already holds (by ETag or content) are not downloaded again. Without --wait
the command returns once the download has started.

--warm-page-cache also reads the model into the page cache once it is ready
(only what is not there already, as far as memory allows), so an inference
server's first load reads memory instead of disk. With --wait the command
returns after the warm-up; without it the warm-up follows the download.`,
		Example: `  cache-agent prefetch 's3://models/llama-3-8b?source=minio' --wait
  cache-agent prefetch s3://models/llama-3-8b --wait --timeout 30m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := model.ParseRef(args[0]); err != nil {
				return err
			}
			ctx := cmd.Context()
			opts := agentapi.EnsureOptions{Refresh: !cached, WarmPageCache: warm}
			var onProgress func(agentapi.Progress)
			bar := newProgressPrinter(cmd.OutOrStdout())
			if wait {
				opts.Wait = timeout
				onProgress = bar.update
			}
			p, err := agentapi.NewClient(*socket).Ensure(ctx, args[0], opts, onProgress)
			bar.done()
			if err != nil {
				return err
			}
			switch {
			case p.State == agentapi.StateReady && p.Hit:
				fmt.Fprintf(cmd.OutOrStdout(), "%s already cached: revision %s, %s, %s\n", args[0], p.Revision, model.FormatBytes(p.TotalBytes), p.Path)
			case p.State == agentapi.StateReady:
				secs := p.Finished.Sub(p.Started).Seconds()
				fmt.Fprintf(cmd.OutOrStdout(), "%s ready: revision %s, %s (%s fetched) in %.1fs, %s\n", args[0], p.Revision,
					model.FormatBytes(p.TotalBytes), model.FormatBytes(p.FetchedBytes), secs, p.Path)
			case wait:
				return fmt.Errorf("not ready after %s: %s", timeout, p.Message())
			default:
				fmt.Fprintln(cmd.OutOrStdout(), p.Message())
			}
			if w := p.Warm; w != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "page cache: %s of %s resident before, %s read in %.2fs",
					model.FormatBytes(w.ResidentBytes), model.FormatBytes(w.Bytes), model.FormatBytes(w.ReadBytes), w.Seconds)
				if w.SkippedBytes > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), ", %s left on disk (memory budget)", model.FormatBytes(w.SkippedBytes))
				}
				if w.Error != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "; stopped: %s", w.Error)
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the model is ready, showing progress")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait: give up waiting after this long (the download goes on)")
	cmd.Flags().BoolVar(&cached, "cached", false, "use a held revision if there is one, without listing the bucket (what a pod start does)")
	cmd.Flags().BoolVar(&warm, "warm-page-cache", false, "read the model into the page cache once it is ready (a hint: as far as memory allows)")
	return cmd
}

// progressPrinter draws a live bar on a terminal and plain lines, at most one
// every few seconds, elsewhere (logs, CI).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	last  time.Time
	drawn bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	f, ok := w.(*os.File)
	return &progressPrinter{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progressPrinter) update(pr agentapi.Progress) {
	if !p.tty {
		if time.Since(p.last) >= 2*time.Second {
			fmt.Fprintln(p.w, pr.Message())
			p.last = time.Now()
		}
		return
	}
	const width = 30
	filled := 0
	if pr.TotalBytes > 0 {
		filled = int(width * pr.DoneBytes / pr.TotalBytes)
	}
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %s", strings.Repeat("#", filled), strings.Repeat("-", width-filled), pr.Message())
	p.drawn = true
}

func (p *progressPrinter) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func newStatusCmd(socket *string) *cobra.Command {
	var output, kubeconfig string
	var cluster bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what this node caches (capacity, dedup savings, models, downloads, pins), or with --cluster which nodes hold which model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			if cluster {
				return clusterStatus(cmd.Context(), cmd.OutOrStdout(), kubeconfig, output, rest.InClusterConfig)
			}
			if kubeconfig != "" {
				return errors.New("--kubeconfig goes with --cluster: without it, status asks this node's agent over --socket")
			}
			st, err := agentapi.NewClient(*socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&cluster, "cluster", false, "show every model some node holds and on which nodes (from the Nodes' warm-model labels), from any machine with a kubeconfig")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --cluster (default: in-cluster config)")
	return cmd
}

func printStatus(w io.Writer, st agentapi.StatusReport) {
	pct := func(n int64) float64 { return 100 * float64(n) / float64(max(st.CapacityBytes, 1)) }
	fmt.Fprintf(w, "Cache:     %s\n", st.Root)
	fmt.Fprintf(w, "Capacity:  %s (evicts past %.0f%% down to %.0f%%)\n", model.FormatBytes(st.CapacityBytes), 100*st.HighWatermark, 100*st.LowWatermark)
	fmt.Fprintf(w, "Used:      %s (%.1f%%), %s reserved by downloads\n", model.FormatBytes(st.UsedBytes), pct(st.UsedBytes), model.FormatBytes(st.ReservedBytes))
	fmt.Fprintf(w, "Dedup:     %s of models in %s on disk, %s saved\n", model.FormatBytes(st.LogicalBytes), model.FormatBytes(st.UsedBytes), model.FormatBytes(st.SavedBytes))
	fmt.Fprintf(w, "Partial:   %d downloads in progress or kept for a resume, %s on disk\n", st.Partials.Count, model.FormatBytes(st.Partials.Bytes))
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tREVISION\tSIZE\tFILES\tSTATE\tPINS\tLAST USE")
	running := map[string]agentapi.Progress{}
	for _, j := range st.Jobs {
		if j.State == agentapi.StateFetching || j.State == agentapi.StateListing || j.State == agentapi.StateFailed {
			running[j.Ref] = j
		}
	}
	for _, m := range st.Models {
		state := "ready"
		if !m.Current {
			state = "ready (older)"
		}
		pins := "-"
		if len(m.Pins) > 0 {
			pins = strings.Join(m.Pins, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.Ref, m.Revision, model.FormatBytes(m.SizeBytes), m.Files, state, pins, ago(m.LastUse))
	}
	for _, j := range running {
		state := string(j.State)
		if j.State == agentapi.StateFetching && j.TotalBytes > 0 {
			state = fmt.Sprintf("fetching %.0f%% (%s/s)", 100*float64(j.DoneBytes)/float64(j.TotalBytes), model.FormatBytes(int64(j.BytesPerSecond)))
		}
		if j.State == agentapi.StateFailed {
			state = "failed: " + j.Error
		}
		fmt.Fprintf(tw, "%s\t-\t%s\t%d\t%s\t-\t-\n", j.Ref, model.FormatBytes(j.TotalBytes), j.Files, state)
	}
	tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func newEvictCmd(socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "evict REF",
		Short: "Remove a model's unpinned revisions from this node (revision=HEX for one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ev, err := agentapi.NewClient(*socket).Evict(cmd.Context(), args[0])
			for _, r := range ev {
				fmt.Fprintf(cmd.OutOrStdout(), "evicted %s revision %s\n", args[0], r)
			}
			return err
		},
	}
}

func newVerifyCmd(socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every cached file; quarantine corrupt ones and repair pinned models (exit 1 if any)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := agentapi.NewClient(*socket).Verify(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "verified %d blobs, %s\n", rep.Blobs, model.FormatBytes(rep.Bytes))
			for _, c := range rep.Corrupt {
				fmt.Fprintf(cmd.OutOrStdout(), "CORRUPT %s (hashes to %s %s): quarantined; evicted %v; pinned %v\n",
					c.Digest, c.Got, c.Err, c.Evicted, c.Pinned)
				switch {
				case c.RepairError != "":
					fmt.Fprintf(cmd.OutOrStdout(), "  repair FAILED: %s\n", c.RepairError)
				case len(c.Repaired) > 0:
					fmt.Fprintf(cmd.OutOrStdout(), "  fetched again and swapped into %v\n", c.Repaired)
				}
			}
			if len(rep.Corrupt) > 0 {
				return errors.New("corrupt content found and quarantined; evicted models are fetched again on next use")
			}
			return nil
		},
	}
}
