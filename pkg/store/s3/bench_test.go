package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/store/s3"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
)

// benchParts is a checkpoint of 32 MiB: weights, optimizer state and small RNG/cursor parts.
func benchParts() map[string][]byte {
	fill := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*131) ^ seed
		}
		return b
	}
	return map[string][]byte{
		ckpt.PartWeights: fill(16<<20-4096, 1),
		"optimizer":      fill(16<<20-4096, 2),
		"rng":            fill(4096, 3),
		ckpt.PartCursor:  fill(4096, 4),
	}
}

func totalSize(parts map[string][]byte) int64 {
	var n int64
	for _, p := range parts {
		n += int64(len(p))
	}
	return n
}

// BenchmarkCheckpointUpload measures ckpt.Save through the S3 store (hashing, metadata, manifest)
// against the same server as BenchmarkRawPutObject; the target is at least 80% of its MB/s.
func BenchmarkCheckpointUpload(b *testing.B) {
	srv := s3test.Start(b)
	cfg := srv.Config("bench-ckpt")
	cfg.PartSize = 16 << 20 // minio-go's default, as the raw benchmark uses
	st, err := s3.New(cfg, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	parts := benchParts()
	b.SetBytes(totalSize(parts))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := ckpt.Save(ctx, st, "bench", int64(i), parts, ckpt.Meta{PolicyVersion: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawPutObject puts the same objects with stock minio-go PutObject, one after another.
func BenchmarkRawPutObject(b *testing.B) {
	srv := s3test.Start(b)
	cl := srv.Client(b)
	parts := benchParts()
	b.SetBytes(totalSize(parts))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for name, data := range parts {
			key := fmt.Sprintf("bench-raw/%012d/%s", i, name)
			if _, err := cl.PutObject(ctx, srv.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
