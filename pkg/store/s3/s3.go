// Package s3 is the store.Store on S3-compatible object storage (AWS S3, MinIO, versitygw, Ceph
// RGW ...) through minio-go, with path-style bucket addressing so any endpoint works.
//
// Integrity: every object is uploaded with its SHA-256 in user metadata (x-amz-meta-bicot-sha256),
// computed before the upload starts, and Get verifies it while the caller reads: a body whose hash
// or length differs, or an object without the metadata (written behind the store's back), fails
// with an error naming the key and wrapping ErrChecksum. S3's own ETag cannot serve: it is not a
// content hash for multipart uploads. Because the digest is known before the upload, a single PUT
// also carries it as x-amz-content-sha256, so the server refuses a body that was damaged on the way
// (ErrChecksum), and minio-go's streaming signature, which would hash every byte a second time, is
// switched off: that is what lets a checkpoint upload keep up with a raw PutObject.
//
// Robustness: each call is tried up to Config.Attempts times on transient failures (network
// errors, 5xx, throttling, a per-attempt timeout) with exponential backoff; each attempt is bounded
// by Config.Timeout. minio-go's own retry loop is switched off so that these two knobs are the
// whole story. Large objects go up as multipart uploads of Config.PartSize, in parallel; a failed
// upload is never visible (S3 publishes an object only when its PUT or multipart completion
// succeeds).
package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/store"
)

// ErrChecksum is wrapped by reads whose content does not match the SHA-256 recorded at upload.
var ErrChecksum = errors.New("checksum mismatch")

// MetaSHA256 is the user-metadata key holding an object's hex SHA-256.
const MetaSHA256 = "Bicot-Sha256"

// Store is a store.Store on one bucket and prefix.
type Store struct {
	cfg    Config
	client *minio.Client
	tr     *http.Transport
	log    zerolog.Logger
}

var _ store.Store = (*Store)(nil)

// New connects lazily (no request is made): use EnsureBucket or any call to reach the server.
func New(cfg Config, log zerolog.Logger) (*Store, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Checkpoints are incompressible; transparent gzip would only cost CPU.
		DisableCompression: true,
	}
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken),
		Secure:       c.Secure,
		Region:       c.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", c, err)
	}
	return &Store{cfg: c, client: client, tr: tr, log: logging.Component(log, "s3")}, nil
}

// String describes the store without secrets.
func (s *Store) String() string { return s.cfg.String() }

// Config returns the normalized config (with its secrets: do not log it with %+v of its fields).
func (s *Store) Config() Config { return s.cfg }

// Client is the underlying minio client, for operations the Store interface does not cover.
func (s *Store) Client() *minio.Client { return s.client }

// Close releases idle connections.
func (s *Store) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

// EnsureBucket creates the bucket when it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	return s.retry(ctx, "ensure bucket", s.cfg.Bucket, func(ctx context.Context) error {
		ok, err := s.client.BucketExists(ctx, s.cfg.Bucket)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		err = s.client.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
		var er minio.ErrorResponse
		if errors.As(err, &er) && (er.Code == "BucketAlreadyOwnedByYou" || er.Code == "BucketAlreadyExists") {
			return nil
		}
		return err
	})
}

// ObjectKey is the S3 object name of a store key (bucket prefix included).
func (s *Store) ObjectKey(key string) string {
	if s.cfg.Prefix == "" {
		return key
	}
	return s.cfg.Prefix + "/" + key
}

// validateKey enforces the store's key grammar: slash-separated, relative, no empty, "." or ".."
// segment, valid UTF-8 without NUL.
func validateKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return fmt.Errorf("key %q: not valid UTF-8 without NUL", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key %q: empty, '.' or '..' path segment", key)
		}
	}
	return nil
}

// Put uploads r under key. Its SHA-256 is computed first: from r itself when r can seek and read
// at offsets (bytes.Reader, os.File), else by spooling r to a temp file.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size, "")
}

// PutSHA256 uploads r whose hex SHA-256 the caller has already computed (the checkpoint writer
// hashes every part anyway), saving a pass over the data. A wrong sum makes every later Get fail.
func (s *Store) PutSHA256(ctx context.Context, key string, r io.Reader, size int64, sum string) error {
	if len(sum) != sha256.Size*2 {
		return fmt.Errorf("s3 put %s: sha256 %q is not 64 hex digits", key, sum)
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return fmt.Errorf("s3 put %s: sha256 %q: %w", key, sum, err)
	}
	return s.put(ctx, key, r, size, strings.ToLower(sum))
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64, sum string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("s3 put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	src, n, sum, cleanup, err := s.source(ctx, r, size, sum)
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	defer cleanup()
	opts := minio.PutObjectOptions{
		UserMetadata: map[string]string{MetaSHA256: sum},
		ContentType:  "application/octet-stream",
		PartSize:     s.cfg.PartSize,
		NumThreads:   s.cfg.Threads,
		// The payload's SHA-256 is already known: minio-go's streaming signature would hash every
		// byte again. A single PUT sends the known digest as x-amz-content-sha256, so the server
		// verifies the body on write; multipart parts go unsigned and are covered by the
		// verification on read.
		DisableContentSha256: true,
	}
	core := minio.Core{Client: s.client}
	return s.retry(ctx, "put", key, func(ctx context.Context) error {
		// A fresh view per attempt: a retry starts from the first byte.
		body := io.NewSectionReader(src, 0, n)
		var err error
		if n <= int64(s.cfg.PartSize) {
			_, err = core.PutObject(ctx, s.cfg.Bucket, s.ObjectKey(key), body, n, "", sum, opts)
		} else {
			_, err = s.client.PutObject(ctx, s.cfg.Bucket, s.ObjectKey(key), body, n, opts)
		}
		return err
	})
}

// source returns a restartable view of the object's bytes, its size and its SHA-256.
func (s *Store) source(ctx context.Context, r io.Reader, size int64, sum string) (io.ReaderAt, int64, string, func(), error) {
	type readerAtSeeker interface {
		io.ReaderAt
		io.Seeker
	}
	if ras, ok := r.(readerAtSeeker); ok {
		start, err := ras.Seek(0, io.SeekCurrent)
		if err == nil && size < 0 {
			var end int64
			end, err = ras.Seek(0, io.SeekEnd)
			size = end - start
			if _, serr := ras.Seek(start, io.SeekStart); err == nil {
				err = serr
			}
		}
		if err == nil {
			sec := io.NewSectionReader(ras, start, size)
			if sum == "" {
				h := sha256.New()
				n, err := io.Copy(h, store.ContextReader(ctx, sec))
				if err != nil {
					return nil, 0, "", nil, fmt.Errorf("hash: %w", err)
				}
				if n != size {
					return nil, 0, "", nil, fmt.Errorf("reader holds %d bytes, size says %d", n, size)
				}
				sum = hex.EncodeToString(h.Sum(nil))
			}
			return sec, size, sum, func() {}, nil
		}
	}
	f, err := os.CreateTemp(s.cfg.TempDir, "bicot-s3-put-*")
	if err != nil {
		return nil, 0, "", nil, fmt.Errorf("spool: %w", err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), store.ContextReader(ctx, r))
	if err != nil {
		cleanup()
		return nil, 0, "", nil, fmt.Errorf("read body: %w", err)
	}
	if size >= 0 && n != size {
		cleanup()
		return nil, 0, "", nil, fmt.Errorf("read %d bytes, size says %d", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); sum == "" {
		sum = got
	} else if got != sum {
		cleanup()
		return nil, 0, "", nil, fmt.Errorf("content sha256 %s, caller said %s: %w", got, sum, ErrChecksum)
	}
	return f, n, sum, cleanup, nil
}

// Get opens key for reading; the reader verifies length and SHA-256 when it reaches the end.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := validateKey(key); err != nil {
		return nil, fmt.Errorf("s3 get: %w", err)
	}
	var out *verifyReader
	err := s.retry(ctx, "get", key, func(actx context.Context) error {
		// The attempt's context must outlive this function: the body is read through it.
		bctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		obj, err := s.client.GetObject(bctx, s.cfg.Bucket, s.ObjectKey(key), minio.GetObjectOptions{})
		if err != nil {
			cancel()
			return err
		}
		info, err := obj.Stat()
		if err != nil {
			obj.Close()
			cancel()
			return err
		}
		sum := metaSHA256(info.UserMetadata)
		if sum == "" {
			obj.Close()
			cancel()
			return permanent{fmt.Errorf("s3 object %s has no %s metadata (written outside this store?): %w", key, MetaSHA256, ErrChecksum)}
		}
		out = &verifyReader{key: key, obj: obj, cancel: cancel, h: sha256.New(), want: sum, size: info.Size}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func metaSHA256(m map[string]string) string {
	for k, v := range m {
		if strings.EqualFold(k, MetaSHA256) || strings.EqualFold(k, "X-Amz-Meta-"+MetaSHA256) {
			return strings.ToLower(v)
		}
	}
	return ""
}

type verifyReader struct {
	key    string
	obj    *minio.Object
	cancel context.CancelFunc
	h      hash.Hash
	want   string
	size   int64
	n      int64
	err    error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.obj.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.size {
			err = fmt.Errorf("s3 object %s: read %d bytes, object has %d: %w", v.key, v.n, v.size, ErrChecksum)
		} else if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			err = fmt.Errorf("s3 object %s: content sha256 %s, recorded %s: %w", v.key, got, v.want, ErrChecksum)
		}
	} else if err != nil {
		err = fmt.Errorf("s3 read %s: %w", v.key, err)
	}
	v.err = err
	return n, err
}

func (v *verifyReader) Close() error {
	err := v.obj.Close()
	v.cancel()
	return err
}

// Stat describes key.
func (s *Store) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	if err := validateKey(key); err != nil {
		return store.ObjectInfo{}, fmt.Errorf("s3 stat: %w", err)
	}
	var info store.ObjectInfo
	err := s.retry(ctx, "stat", key, func(ctx context.Context) error {
		oi, err := s.client.StatObject(ctx, s.cfg.Bucket, s.ObjectKey(key), minio.StatObjectOptions{})
		if err != nil {
			return err
		}
		info = store.ObjectInfo{Key: key, Size: oi.Size, Modified: oi.LastModified}
		return nil
	})
	return info, err
}

// List returns the objects under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	full := s.ObjectKey(prefix)
	if s.cfg.Prefix != "" && prefix == "" {
		full = s.cfg.Prefix + "/"
	}
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	var out []store.ObjectInfo
	err := s.retry(ctx, "list", prefix, func(ctx context.Context) error {
		out = out[:0]
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops minio's listing goroutine if we return early
		for oi := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
			if oi.Err != nil {
				return oi.Err
			}
			// Some servers list directory markers; they are not objects.
			if strings.HasSuffix(oi.Key, "/") {
				continue
			}
			out = append(out, store.ObjectInfo{Key: strings.TrimPrefix(oi.Key, strip), Size: oi.Size, Modified: oi.LastModified})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("s3 delete: %w", err)
	}
	return s.retry(ctx, "delete", key, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.cfg.Bucket, s.ObjectKey(key), minio.RemoveObjectOptions{})
	})
}

// permanent marks an error that must not be retried.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// retry runs fn with a per-attempt timeout until it succeeds, fails permanently, runs out of
// attempts or ctx ends. Errors name the operation and key and map "no such key" to store.ErrNotFound.
func (s *Store) retry(ctx context.Context, op, key string, fn func(ctx context.Context) error) error {
	backoff := s.cfg.Backoff
	giveUp := time.Now().Add(s.cfg.RetryFor)
	var err error
	for attempt := 1; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			if err == nil {
				err = cerr
			}
			return fmt.Errorf("s3 %s %s: %w", op, key, errors.Join(cerr, err))
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err = fn(actx)
		var ne net.Error
		timedOut := (actx.Err() != nil || (errors.As(err, &ne) && ne.Timeout())) && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if isNotFound(err) {
			if op == "delete" {
				return nil
			}
			return fmt.Errorf("s3 %s %s: %w", op, key, store.ErrNotFound)
		}
		if isDigestMismatch(err) {
			return fmt.Errorf("s3 %s %s: server refused the body: %w (%v)", op, key, ErrChecksum, err)
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if ctx.Err() != nil || !(timedOut || transient(err)) || (s.cfg.Attempts > 0 && attempt >= s.cfg.Attempts) ||
			time.Now().Add(backoff).After(giveUp) {
			if timedOut {
				err = fmt.Errorf("attempt timed out after %v: %w", s.cfg.Timeout, err)
			}
			return fmt.Errorf("s3 %s %s (attempt %d, retried for up to %v): %w", op, key, attempt, s.cfg.RetryFor, err)
		}
		s.log.Warn().Err(err).Str("op", op).Str("key", key).Int("attempt", attempt).Dur("backoff", backoff).Msg("transient s3 error, retrying")
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

func isNotFound(err error) bool {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code == "NoSuchKey" || er.Code == "NotFound" || (er.StatusCode == http.StatusNotFound && er.Code != "NoSuchBucket")
	}
	return false
}

func isDigestMismatch(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && (er.Code == "XAmzContentSHA256Mismatch" || er.Code == "BadDigest" || er.Code == "InvalidDigest")
}

// transient reports errors worth another attempt: the network, server errors and throttling.
func transient(err error) bool {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed", "XMinioServerNotInitialized":
			return true
		}
		return er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests || er.StatusCode == http.StatusRequestTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF)
}
