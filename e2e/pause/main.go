// Command pause is the e2e cluster's sandbox image: it sleeps until SIGINT or
// SIGTERM and reaps zombies. No image can be pulled on the test machines, so
// e2e/up.sh builds this one (registry.k8s.io/pause:3.10.1) locally.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	s := make(chan os.Signal, 4)
	signal.Notify(s, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range s {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
