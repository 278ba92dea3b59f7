package agent

import (
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
)

// The store's reports, copied into the API's own types: the API package must
// not import the store (STYLE rule 16). Types with the same fields convert,
// so a field added on one side only stops the build; Status and VerifyReport
// hold slices of them and are copied field by field, which wire_test.go
// guards by checking that both sides encode to the same JSON.

func wireStatus(s cache.Status) agentapi.Status {
	out := agentapi.Status{Root: s.Root, CapacityBytes: s.CapacityBytes, UsedBytes: s.UsedBytes,
		ReservedBytes: s.ReservedBytes, LogicalBytes: s.LogicalBytes, SavedBytes: s.SavedBytes,
		HighWatermark: s.HighWatermark, LowWatermark: s.LowWatermark, Evictions: s.Evictions}
	if s.Models != nil {
		out.Models = make([]agentapi.ModelStatus, len(s.Models))
		for i, m := range s.Models {
			out.Models[i] = wireModelStatus(m)
		}
	}
	return out
}

func wireModelStatus(m cache.ModelStatus) agentapi.ModelStatus {
	return agentapi.ModelStatus(m)
}

func wirePartials(p cache.Partials) agentapi.Partials {
	return agentapi.Partials(p)
}

func wireVerifyReport(r cache.VerifyReport) agentapi.VerifyReport {
	out := agentapi.VerifyReport{Blobs: r.Blobs, Bytes: r.Bytes}
	if r.Corrupt != nil {
		out.Corrupt = make([]agentapi.CorruptBlob, len(r.Corrupt))
		for i, c := range r.Corrupt {
			out.Corrupt[i] = agentapi.CorruptBlob(c)
		}
	}
	return out
}
