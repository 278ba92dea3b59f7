// Command fetch-profile runs pkg/fetch in process against an S3 endpoint into
// a fresh content store, for profiling the cold fetch without the agent. From
// bench/ (a module of its own):
//
//	go run ./fetch-profile --endpoint http://127.0.0.1:7070 --bucket bench --prefix m4x1g \
//	    --dir /tmp/fp --cpuprofile /tmp/cpu.pprof
//
// It prints wall time, user and system CPU, and the process's /proc/self/io
// (read_bytes shows whether any byte was read back from disk).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("fetch-profile: ")
	endpoint := flag.String("endpoint", "http://127.0.0.1:7070", "S3 endpoint URL")
	access := flag.String("access", "testkey", "access key ID")
	secret := flag.String("secret", "testsecret", "secret access key")
	bucket := flag.String("bucket", "bench", "bucket")
	prefix := flag.String("prefix", "m4x1g", "model prefix")
	dir := flag.String("dir", "", "cache directory (created fresh; removed first)")
	concurrency := flag.Int("concurrency", 0, "ranged GETs in flight (0: default)")
	partMiB := flag.Int64("part-size-mib", 0, "part size in MiB (0: default)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	memprofile := flag.String("memprofile", "", "write an allocation profile here after the fetch")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	if err := os.RemoveAll(*dir); err != nil {
		log.Fatal(err)
	}
	opts := []fetch.Option{fetch.WithPartSize(*partMiB << 20)}
	if *concurrency > 0 {
		opts = append(opts, fetch.WithConcurrency(*concurrency))
	}
	f, err := fetch.New(map[string]fetch.Source{"s": {Endpoint: *endpoint, PathStyle: true, Region: "us-east-1",
		AccessKeyID: *access, SecretAccessKey: *secret}}, opts...)
	if err != nil {
		log.Fatal(err)
	}
	ref, err := model.ParseRef("s3://" + *bucket + "/" + *prefix + "?source=s")
	if err != nil {
		log.Fatal(err)
	}
	store, err := cache.Open(*dir, cache.Options{Capacity: 1 << 40})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	m, err := f.List(ctx, ref, nil)
	if err != nil {
		log.Fatal(err)
	}
	if *cpuprofile != "" {
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	full, st, err := f.Fetch(ctx, ref, nil, m, store, nil)
	if err != nil {
		log.Fatal(err)
	}
	d := time.Since(start)
	// The model tree (hard links, directory fsyncs, manifest, state) is
	// part of what the agent does before a model is ready.
	treeStart := time.Now()
	if _, err := store.PutModel(full); err != nil {
		log.Fatal(err)
	}
	tree := time.Since(treeStart)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	fmt.Printf("%d bytes in %.2fs (%.2f GB/s), user %.2fs sys %.2fs, maxrss %d MiB; then the model tree in %.3fs\n",
		st.BytesFetched, d.Seconds(), float64(st.BytesFetched)/1e9/d.Seconds(),
		tv(ru1.Utime)-tv(ru0.Utime), tv(ru1.Stime)-tv(ru0.Stime), ru1.Maxrss/1024, tree.Seconds())
	if *memprofile != "" {
		pf, err := os.Create(*memprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.Lookup("allocs").WriteTo(pf, 0); err != nil {
			log.Fatal(err)
		}
		pf.Close()
	}
	if io, err := os.ReadFile("/proc/self/io"); err == nil {
		fmt.Print(string(io))
	}
}
