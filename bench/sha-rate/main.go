// Command sha-rate prints how many bytes SHA-256 hashes per CPU second on one
// core of this machine (crypto/sha256, as the cache uses it), as bytes per
// second. The bench adds that cost to the durable limit's CPU for its trust
// floor: what a download built like the durable limit that also checks a
// content digest spends at least.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("sha-rate: ")
	total := flag.Int64("bytes", 2<<30, "bytes to hash")
	flag.Parse()
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	h := sha256.New()
	c0 := cpu()
	var n int64
	for n < *total {
		m, _ := h.Write(buf[:min(int64(len(buf)), *total-n)])
		n += int64(m)
	}
	_ = h.Sum(nil)
	d := cpu() - c0
	if d <= 0 {
		log.Fatal("no CPU time measured")
	}
	fmt.Printf("%.0f\n", float64(n)/d.Seconds())
}

// cpu is the process's user and system time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
