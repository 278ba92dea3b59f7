// Command s3-seed uploads a synthetic "model" to an S3 bucket: N big weight
// files and N small JSON files under a prefix, with deterministic
// pseudo-random content (same flags, same bytes, same ETags). The demo and the
// benchmark use it to create their data. From bench/ (a module of its own):
//
//	go run ./s3-seed --endpoint 127.0.0.1:7070 --access testkey --secret testsecret \
//	    --bucket bench --prefix m4x1g --big 4 --big-size 1GiB --small 5 --small-size 4KiB
//
// --mutate-one rewrites only the first big file (or the first small one when
// there are no big files) with different content of the same size: a new
// revision of the model that shares every other file with the old one.
// --variant V picks which different content (a new V, a new revision).
//
// --many N --many-total SIZE adds N shard files under shards/NN/ whose sizes
// are spread log-uniformly over 1:64 (about 70 KiB to 4.5 MiB for 2,000
// files in 2 GiB) and add up to exactly SIZE: a sharded checkpoint with a
// tokenizer's worth of small pieces.
//
//	go run ./s3-seed --bucket bench --prefix m2000 --many 2000 --many-total 2GiB
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Names a Hugging Face style model directory would have; more small files
// than names get extra-N.json.
var smallNames = []string{"config.json", "tokenizer.json", "tokenizer_config.json",
	"generation_config.json", "special_tokens_map.json"}

func main() {
	log.SetFlags(0)
	log.SetPrefix("s3-seed: ")
	endpoint := flag.String("endpoint", "127.0.0.1:7070", "S3 endpoint, host:port (http) or a URL")
	access := flag.String("access", "testkey", "access key ID")
	secret := flag.String("secret", "testsecret", "secret access key")
	region := flag.String("region", "us-east-1", "region")
	bucket := flag.String("bucket", "", "bucket (created if missing)")
	prefix := flag.String("prefix", "", "key prefix (the model directory)")
	big := flag.Int("big", 0, "number of big weight files")
	bigSize := flag.String("big-size", "1GiB", "size of each big file")
	small := flag.Int("small", 0, "number of small JSON files")
	smallSize := flag.String("small-size", "4KiB", "size of each small file")
	seed := flag.Uint64("seed", 1, "content seed")
	mutate := flag.Bool("mutate-one", false, "rewrite only the first big (else small) file with new content")
	variant := flag.Uint64("variant", 0, "with --mutate-one: which new content (each value gives other bytes)")
	many := flag.Int("many", 0, "number of shard files of varied sizes (see --many-total)")
	manyTotal := flag.String("many-total", "2GiB", "total size of the --many shards")
	skip := flag.Bool("skip-existing", false, "do not upload objects that already exist with the right size")
	threads := flag.Uint("threads", 4, "parallel part uploads per object")
	flag.Parse()
	if *bucket == "" || flag.NArg() > 0 {
		log.Fatal("usage: s3-seed --bucket B [--prefix P] [--big N --big-size SIZE] [--small N --small-size SIZE] [--seed S] [--mutate-one]")
	}
	bs, err := parseSize(*bigSize)
	if err != nil {
		log.Fatal(err)
	}
	ss, err := parseSize(*smallSize)
	if err != nil {
		log.Fatal(err)
	}
	mt, err := parseSize(*manyTotal)
	if err != nil {
		log.Fatal(err)
	}

	host, secure := *endpoint, false
	if rest, ok := strings.CutPrefix(host, "http://"); ok {
		host = rest
	} else if rest, ok := strings.CutPrefix(host, "https://"); ok {
		host, secure = rest, true
	}
	client, err := minio.New(strings.TrimSuffix(host, "/"), &minio.Options{
		Creds:        credentials.NewStaticV4(*access, *secret, ""),
		Secure:       secure,
		Region:       *region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := ensureBucket(ctx, client, *bucket, *region); err != nil {
		log.Fatal(err)
	}

	type object struct {
		name string
		size int64
		json bool
	}
	var objs []object
	for i := 1; i <= *big; i++ {
		objs = append(objs, object{fmt.Sprintf("model-%05d-of-%05d.safetensors", i, *big), bs, false})
	}
	for i := 0; i < *small; i++ {
		name := fmt.Sprintf("extra-%d.json", i)
		if i < len(smallNames) {
			name = smallNames[i]
		}
		objs = append(objs, object{name, ss, true})
	}
	for i, size := range shardSizes(*many, mt, *seed) {
		objs = append(objs, object{fmt.Sprintf("shards/%02d/shard-%05d-of-%05d.bin", i%20, i+1, *many), size, false})
	}
	if *mutate {
		if len(objs) == 0 {
			log.Fatal("--mutate-one needs --big or --small")
		}
		objs = objs[:1]
	}

	pfx := strings.Trim(*prefix, "/")
	keyOf := func(name string) string {
		if pfx == "" {
			return name
		}
		return pfx + "/" + name
	}
	// One listing instead of a HEAD per object: a 2,000-file model is
	// checked in a few requests.
	have := map[string]int64{}
	if *skip && !*mutate {
		lp := pfx
		if lp != "" {
			lp += "/"
		}
		for o := range client.ListObjects(ctx, *bucket, minio.ListObjectsOptions{Prefix: lp, Recursive: true}) {
			if o.Err != nil {
				log.Fatalf("list s3://%s/%s: %v", *bucket, lp, o.Err)
			}
			have[o.Key] = o.Size
		}
	}
	verbose := len(objs) <= 20
	start := time.Now()
	var total, held atomic.Int64
	var wg sync.WaitGroup
	work := make(chan object)
	for range min(8, len(objs)) {
		wg.Go(func() {
			for o := range work {
				key := keyOf(o.name)
				if size, ok := have[key]; ok && size == o.size {
					held.Add(1)
					if verbose {
						fmt.Printf("have s3://%s/%s (%s)\n", *bucket, key, human(o.size))
					}
					continue
				}
				// Each object's stream depends on the seed and the key; a mutation
				// perturbs the seed so the same key gets different bytes.
				s := mix(*seed, keyHash(key))
				if *mutate {
					s = mix(mix(s, 0x6d75746174650a), *variant) // "mutate"
				}
				var r interface {
					io.Reader
					io.ReaderAt
				}
				if o.json {
					r = bytes.NewReader(jsonContent(o.name, *seed, s, o.size))
				} else {
					r = &gen{seed: s, size: o.size}
				}
				_, err := client.PutObject(ctx, *bucket, key, r, o.size, minio.PutObjectOptions{
					ContentType: contentType(o.json),
					NumThreads:  *threads,
					PartSize:    16 << 20,
					// UNSIGNED-PAYLOAD: skip hashing every byte for the streaming signature.
					DisableContentSha256: true,
				})
				if err != nil {
					log.Fatalf("put s3://%s/%s: %v", *bucket, key, err)
				}
				total.Add(o.size)
				if verbose {
					fmt.Printf("put  s3://%s/%s (%s)\n", *bucket, key, human(o.size))
				}
			}
		})
	}
	for _, o := range objs {
		work <- o
	}
	close(work)
	wg.Wait()
	if !verbose {
		fmt.Printf("s3://%s/%s: %d objects held, %d uploaded\n", *bucket, pfx, held.Load(), int64(len(objs))-held.Load())
	}
	if t := total.Load(); t > 0 {
		d := time.Since(start)
		fmt.Printf("uploaded %s in %.1fs (%.0f MB/s)\n", human(t), d.Seconds(), float64(t)/1e6/d.Seconds())
	}
}

// shardSizes returns n sizes spread log-uniformly over a 1:64 range, in a
// shuffled order fixed by seed, scaled to add up to exactly total.
func shardSizes(n int, total int64, seed uint64) []int64 {
	if n <= 0 {
		return nil
	}
	w := make([]float64, n)
	var sum float64
	for i := range w {
		u := float64(mix(seed^0x5348415244, uint64(i))>>11) / (1 << 53) // [0,1)
		w[i] = math.Exp(u * math.Log(64))
		sum += w[i]
	}
	sizes := make([]int64, n)
	var got int64
	for i := range w {
		sizes[i] = max(1, int64(float64(total)*w[i]/sum))
		got += sizes[i]
	}
	sizes[0] += total - got // rounding
	return sizes
}

func ensureBucket(ctx context.Context, c *minio.Client, bucket, region string) error {
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if ok {
		return nil
	}
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}

func contentType(json bool) string {
	if json {
		return "application/json"
	}
	return "application/octet-stream"
}

// gen is an endless-looking but sized stream of pseudo-random bytes: word i
// of the object is mix(seed, i), so any range can be produced without the
// bytes before it (io.ReaderAt lets minio-go upload parts in parallel) and
// nothing is held in memory.
type gen struct {
	seed uint64
	size int64
	off  int64
}

func (g *gen) Read(p []byte) (int, error) {
	n, err := g.ReadAt(p, g.off)
	g.off += int64(n)
	return n, err
}

func (g *gen) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.size {
		return 0, io.EOF
	}
	n := len(p)
	if rem := g.size - off; int64(n) > rem {
		n = int(rem)
	}
	fill(p[:n], g.seed, off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func fill(p []byte, seed uint64, off int64) {
	w := uint64(off) / 8
	var buf [8]byte
	i := 0
	if head := int(off % 8); head != 0 {
		binary.LittleEndian.PutUint64(buf[:], mix(seed, w))
		i = copy(p, buf[head:])
		w++
	}
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], mix(seed, w))
		w++
	}
	if i < len(p) {
		binary.LittleEndian.PutUint64(buf[:], mix(seed, w))
		copy(p[i:], buf[:])
	}
}

// mix is splitmix64's finalizer over seed+i: fast and good enough for bytes
// that must not compress or collide, not for anything secret.
func mix(seed, i uint64) uint64 {
	z := seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func keyHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// jsonContent is a valid JSON document of exactly size bytes (padded with hex
// digits), or raw bytes when size is too small to hold one.
func jsonContent(name string, seed, s uint64, size int64) []byte {
	head := fmt.Sprintf(`{"name":%q,"seed":%d,"pad":"`, name, seed)
	const tail = "\"}\n"
	if size < int64(len(head)+len(tail)) {
		b := make([]byte, size)
		fill(b, s, 0)
		return b
	}
	b := make([]byte, size)
	copy(b, head)
	pad := b[len(head) : size-int64(len(tail))]
	fill(pad, s, 0)
	for i, c := range pad {
		pad[i] = "0123456789abcdef"[c&15]
	}
	copy(b[size-int64(len(tail)):], tail)
	return b
}

// parseSize reads 123, 4KiB, 64MiB, 1GiB (binary) or 1KB, 1MB, 1GB (decimal).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 4096, 4KiB, 64MiB, 1GiB)", s)
	}
	return n * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
