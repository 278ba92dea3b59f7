// Command sdk-download is the benchmark's aws-sdk-go-v2 baseline: it downloads
// every object under s3://BUCKET/PREFIX into a directory with the SDK's
// feature/s3/manager Downloader (16 parts of 16 MiB in flight, written with
// WriteAt), the way a Go program would do it with the stock SDK.
//
// With --null it measures what the S3 server and the network can deliver
// instead: the same parallel ranged GETs (16 MiB parts, 16 in flight across
// all files) whose bytes are thrown away, with no disk writes at all.
//
// With --durable-sink DIR it measures the limit for any download that must
// be on disk when it ends: the same ranged GETs, each written at its offset
// in 256 KiB pwrites into a preallocated file, writeback started as each
// part ends (sync_file_range), each file fsynced after its last part; no
// hashing, no content store, no tree.
//
// With --durable-sink DIR --sha256 it measures the trust limit: the durable
// limit that also hashes every byte with SHA-256 as it streams, each part
// on its own (the cheapest place for the hash: no byte waits for the ones
// before it, none is read back). A cache that checks a content digest
// before it publishes a file does at least this much.
//
// With --durable-sink DIR --from-disk SRC it measures the disk alone: the
// same parts, read with pread from SRC (the S3 server's own files, its
// posix backend) instead of over HTTP, and written the same way. When the
// server reads its objects from the disk the cache writes to, no download
// that keeps its bytes can end before this does: it is the floor.
//
// From bench/ (a module of its own):
//
//	go run ./sdk-download --endpoint http://127.0.0.1:7070 --bucket bench --prefix m4x1g --dest /tmp/out
//	go run ./sdk-download --endpoint http://127.0.0.1:7070 --bucket bench --prefix m4x1g --null
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"
)

type object struct {
	key, rel string
	size     int64
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("sdk-download: ")
	endpoint := flag.String("endpoint", "http://127.0.0.1:7070", "S3 endpoint URL")
	access := flag.String("access", "testkey", "access key ID")
	secret := flag.String("secret", "testsecret", "secret access key")
	region := flag.String("region", "us-east-1", "region")
	bucket := flag.String("bucket", "", "bucket")
	prefix := flag.String("prefix", "", "key prefix (the model directory)")
	dest := flag.String("dest", "", "destination directory (not with --null)")
	concurrency := flag.Int("concurrency", 16, "ranged GETs in flight")
	partMiB := flag.Int64("part-size-mib", 16, "part size in MiB")
	files := flag.Int("files", 1, "files downloaded at once (each with --concurrency parts in flight)")
	null := flag.Bool("null", false, "discard the bytes: measure the server, not the disk")
	durable := flag.String("durable-sink", "", "write parts into files in this directory and fsync them")
	fromDisk := flag.String("from-disk", "", "with --durable-sink: read the parts from this directory (the server's bucket directory) instead of S3")
	sha := flag.Bool("sha256", false, "with --durable-sink: also hash every byte with SHA-256 as it streams (the trust limit)")
	syncMode := flag.String("durable-sync", "file", "with --durable-sink: file (fsync each file after its last part), syncfs (one syncfs(2) at the end) or none (what the sync costs)")
	quiet := flag.Bool("q", false, "print nothing but errors")
	flag.Parse()
	modes := 0
	for _, on := range []bool{*dest != "", *null, *durable != ""} {
		if on {
			modes++
		}
	}
	if *bucket == "" || modes != 1 || flag.NArg() > 0 || ((*fromDisk != "" || *sha) && *durable == "") {
		log.Fatal("usage: sdk-download --endpoint URL --bucket B [--prefix P] (--dest DIR | --null | --durable-sink DIR [--sha256] [--from-disk SRC])")
	}
	if !strings.Contains(*endpoint, "://") {
		*endpoint = "http://" + *endpoint
	}

	// Enough idle connections per host for every part in flight; the SDK's
	// default (10) would make 16 workers keep redialling.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 256
	})
	client := s3.New(s3.Options{
		Region:       *region,
		BaseEndpoint: aws.String(*endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(*access, *secret, ""),
		HTTPClient:   httpClient,
		// Ranged GETs carry no whole-object checksum; without this the SDK
		// logs a warning for every part.
		DisableLogOutputChecksumValidationSkipped: true,
	})

	ctx := context.Background()
	objs, err := list(ctx, client, *bucket, *prefix)
	if err != nil {
		log.Fatal(err)
	}
	partSize := *partMiB << 20
	start := time.Now()
	var total int64
	if *null {
		total, err = discardAll(objs, s3Parts(ctx, client, *bucket), partSize, *concurrency)
	} else if *durable != "" {
		src := s3Parts(ctx, client, *bucket)
		if *fromDisk != "" {
			src = diskParts(*fromDisk)
		}
		total, err = durableAll(objs, src, *durable, partSize, *concurrency, *syncMode, *sha)
	} else {
		total, err = downloadAll(ctx, client, *bucket, objs, *dest, partSize, *concurrency, *files)
	}
	if err != nil {
		log.Fatal(err)
	}
	if !*quiet {
		d := time.Since(start)
		fmt.Printf("%d objects, %d bytes in %.2fs (%.2f GB/s)\n", len(objs), total, d.Seconds(), float64(total)/1e9/d.Seconds())
	}
}

func list(ctx context.Context, c *s3.Client, bucket, prefix string) ([]object, error) {
	p := strings.Trim(prefix, "/")
	if p != "" {
		p += "/"
	}
	var objs []object
	pager := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &p})
	for pager.HasMorePages() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", bucket, p, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			rel := strings.TrimPrefix(key, p)
			// A baseline, not a hardened client: still never write outside dest.
			if rel == "" || strings.HasSuffix(rel, "/") || !filepath.IsLocal(rel) {
				continue
			}
			objs = append(objs, object{key: key, rel: rel, size: aws.ToInt64(o.Size)})
		}
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no objects under s3://%s/%s", bucket, p)
	}
	return objs, nil
}

// downloadAll runs the stock manager.Downloader, files at a time.
func downloadAll(ctx context.Context, c *s3.Client, bucket string, objs []object, dest string, partSize int64, concurrency, files int) (int64, error) {
	dl := manager.NewDownloader(c, func(d *manager.Downloader) {
		d.Concurrency = concurrency
		d.PartSize = partSize
	})
	return parallel(objs, files, func(o object) (int64, error) {
		path := filepath.Join(dest, filepath.FromSlash(o.rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return 0, err
		}
		f, err := os.Create(path)
		if err != nil {
			return 0, err
		}
		n, err := dl.Download(ctx, f, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String(o.key)})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, fmt.Errorf("get %s: %w", o.key, err)
		}
		return n, nil
	})
}

// discardAll splits every object into parts and keeps concurrency ranged GETs
// in flight across all of them, reading each body into a 1 MiB buffer.
func discardAll(objs []object, src partSource, partSize int64, concurrency int) (int64, error) {
	type part struct {
		key      string
		off, len int64
	}
	var ranges []part
	for _, o := range objs {
		if o.size == 0 {
			ranges = append(ranges, part{o.key, 0, 0})
			continue
		}
		for off := int64(0); off < o.size; off += partSize {
			ranges = append(ranges, part{o.key, off, min(partSize, o.size-off)})
		}
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
	return parallel(ranges, concurrency, func(p part) (int64, error) {
		body, err := src(p.key, p.off, p.len)
		if err != nil {
			return 0, fmt.Errorf("get %s %d+%d: %w", p.key, p.off, p.len, err)
		}
		defer body.Close()
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		var n int64
		for {
			m, err := body.Read(*buf)
			n += int64(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return n, fmt.Errorf("read %s %d+%d: %w", p.key, p.off, p.len, err)
			}
		}
		if n != p.len {
			return n, fmt.Errorf("get %s %d+%d: got %d bytes", p.key, p.off, p.len, n)
		}
		return n, nil
	})
}

// parallel runs fn over items with at most n at once; it returns the sum of
// the counts and the first error.
func parallel[T any](items []T, n int, fn func(T) (int64, error)) (int64, error) {
	var (
		mu       sync.Mutex
		total    int64
		firstErr error
		wg       sync.WaitGroup
	)
	ch := make(chan T)
	for range max(n, 1) {
		wg.Go(func() {
			for it := range ch {
				c, err := fn(it)
				mu.Lock()
				total += c
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	for _, it := range items {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		ch <- it
	}
	close(ch)
	wg.Wait()
	return total, firstErr
}

// partSource opens bytes [off, off+n) of the object named key.
type partSource func(key string, off, n int64) (io.ReadCloser, error)

// s3Parts reads parts with ranged GETs (a plain GET for an empty object: a
// range cannot name zero bytes).
func s3Parts(ctx context.Context, c *s3.Client, bucket string) partSource {
	return func(key string, off, n int64) (io.ReadCloser, error) {
		in := &s3.GetObjectInput{Bucket: &bucket, Key: aws.String(key)}
		if n > 0 {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		}
		out, err := c.GetObject(ctx, in)
		if err != nil {
			return nil, err
		}
		return out.Body, nil
	}
}

// diskParts reads parts straight from the files behind the objects.
func diskParts(dir string) partSource {
	return func(key string, off, n int64) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, off, n), f}, nil
	}
}

// durableAll is discardAll with the bytes kept: each part is read from src in
// 256 KiB pieces written at their offsets, its writeback is started when it
// ends, and each file is fsynced by the worker that wrote its last part (so
// with many small files the fsyncs run in parallel, as a real downloader's
// would). With sha, each part's bytes are also hashed as they are written.
func durableAll(objs []object, src partSource, dir string, partSize int64, concurrency int, syncMode string, sha bool) (int64, error) {
	type file struct {
		f    *os.File
		left atomic.Int64 // parts not yet written
	}
	type part struct {
		key      string
		off, len int64
		f        *file
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	var ranges []part
	var files []*file
	defer func() {
		for _, f := range files {
			f.f.Close()
		}
	}()
	for i, o := range objs {
		path := filepath.Join(dir, fmt.Sprintf("%04d", i))
		f, err := os.Create(path)
		if err != nil {
			return 0, err
		}
		fl := &file{f: f}
		files = append(files, fl)
		if o.size == 0 {
			continue
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, o.size); err != nil {
			return 0, fmt.Errorf("fallocate %s: %w", path, err)
		}
		for off := int64(0); off < o.size; off += partSize {
			ranges = append(ranges, part{o.key, off, min(partSize, o.size-off), fl})
			fl.left.Add(1)
		}
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
	total, err := parallel(ranges, concurrency, func(p part) (int64, error) {
		body, err := src(p.key, p.off, p.len)
		if err != nil {
			return 0, fmt.Errorf("get %s %d+%d: %w", p.key, p.off, p.len, err)
		}
		defer body.Close()
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		var h hash.Hash
		if sha {
			h = sha256.New()
		}
		var n int64
		for n < p.len {
			b := (*buf)[:min(int64(len(*buf)), p.len-n)]
			if _, err := io.ReadFull(body, b); err != nil {
				return n, fmt.Errorf("read %s %d+%d: %w", p.key, p.off, p.len, err)
			}
			if _, err := p.f.f.WriteAt(b, p.off+n); err != nil {
				return n, err
			}
			if h != nil {
				h.Write(b)
			}
			n += int64(len(b))
		}
		if h != nil {
			h.Sum(nil)
		}
		if err := unix.SyncFileRange(int(p.f.f.Fd()), p.off, p.len, unix.SYNC_FILE_RANGE_WRITE); err != nil {
			return n, err
		}
		if p.f.left.Add(-1) == 0 && syncMode == "file" {
			return n, p.f.f.Sync()
		}
		return n, nil
	})
	if err == nil && syncMode == "syncfs" {
		err = unix.Syncfs(int(files[0].f.Fd()))
	}
	return total, err
}
