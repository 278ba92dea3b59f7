// Package buildinfo tells the version a modelcache command reports.
package buildinfo

import "runtime/debug"

// Version is the version of a command built with
// -ldflags "-X main.version=…" (the Makefile, the image and the Dockerfile
// set it from git describe); v is that variable. A build without it has v
// "dev", and gets "dev-" and the first 12 digits of the commit Go recorded
// in the binary, when it recorded one.
func Version(v string) string {
	if v != "dev" {
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return v
}
