package model

import "fmt"

// FormatBytes prints n in binary units: "1.5 GiB". It lives here, in the
// leaf, because both the store's errors and the agent API's progress lines
// (which the CSI plugin prints without linking the store) use it.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
