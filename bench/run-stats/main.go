// Command run-stats runs a command and reports what it cost: wall seconds, CPU
// seconds (user+system, children included) and peak RSS in KiB, as one line
// "WALL CPU MAXRSS_KIB" on the file given by -o (default stderr). The
// benchmark uses it instead of GNU time, which a fresh machine may not have.
//
//	run-stats -o cost.txt rclone copy ...
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("run-stats: ")
	out := flag.String("o", "", "write the result line to this file instead of stderr")
	flag.Parse()
	if flag.NArg() == 0 {
		log.Fatal("usage: run-stats [-o FILE] COMMAND [ARG...]")
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		log.Fatal(err)
	}
	line := fmt.Sprintf("%.3f %.3f %d\n", wall.Seconds(),
		(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), maxRSS(cmd.ProcessState))
	w := os.Stderr
	if *out != "" {
		if w, err = os.Create(*out); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := w.WriteString(line); err != nil {
		log.Fatal(err)
	}
	if w != os.Stderr {
		if err := w.Close(); err != nil {
			log.Fatal(err)
		}
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

// maxRSS is the child's peak resident set in KiB (Linux reports ru_maxrss in KiB).
func maxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}
