// Command read-tree reads every file under a directory once, front to back
// with 1 MiB reads, the way a loader reads safetensors shards at start, and
// prints "BYTES SECONDS". The benchmark times a model's first read with it,
// after a dropped page cache and after a page-cache warm-up.
//
//	read-tree /var/lib/modelcache/models/<ref>/<rev>
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("read-tree: ")
	if len(os.Args) != 2 {
		log.Fatal("usage: read-tree DIR")
	}
	buf := make([]byte, 1<<20)
	var total int64
	start := time.Now()
	err := filepath.WalkDir(os.Args[1], func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d %.3f\n", total, time.Since(start).Seconds())
}
