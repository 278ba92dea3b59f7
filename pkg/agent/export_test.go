package agent

import (
	"context"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

// Mincore is mincore(2), for tests that check what is in the page cache.
var Mincore = mincore

// WarmTree runs the warm-up of the tree at root with a given memory budget.
func WarmTree(root string, budget int64) (agentapi.WarmReport, error) {
	var rep agentapi.WarmReport
	err := warmTree(context.Background(), root, budget, &rep)
	return rep, err
}
