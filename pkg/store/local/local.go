// Package local is the store.Store on a local directory: the laptop default and the store tests
// use. An object is a file under the root at its key's path. Put writes a temporary file in the
// target directory, fsyncs it and renames it over the key, so readers see either the old or the new
// object, never a partial one, even across a crash.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bicot-rl/bicot/pkg/store"
)

// tmpPrefix marks in-flight Put files; keys may not use it so List can skip them safely.
const tmpPrefix = ".bicot-tmp-"

// Store keeps objects as files under Root.
type Store struct {
	root string
}

var _ store.Store = (*Store)(nil)

// New opens (creating if needed) a store rooted at dir.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("local store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute directory the store lives in.
func (s *Store) Root() string { return s.root }

// ValidateKey reports why key is not a valid store key: keys are slash-separated relative paths
// of valid UTF-8 with no empty, "." or ".." segments, no leading slash, no NUL byte, and no
// backslash (a separator on some systems). The S3 store applies the same grammar.
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("invalid key: empty")
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("invalid key %q: not valid UTF-8", key)
	}
	if strings.ContainsAny(key, "\x00\\") {
		return fmt.Errorf("invalid key %q: contains NUL or backslash", key)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("invalid key %q: absolute path", key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("invalid key %q: empty path segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("invalid key %q: %q segment", key, seg)
		case strings.HasPrefix(seg, tmpPrefix):
			return fmt.Errorf("invalid key %q: segment prefix %q is reserved", key, tmpPrefix)
		}
	}
	return nil
}

func (s *Store) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put writes the object atomically. size, when not -1, must match the bytes read.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	dir := filepath.Dir(p)
	var f *os.File
	// A concurrent Delete may prune the directory between MkdirAll and CreateTemp: retry.
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		f, err = os.CreateTemp(dir, tmpPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt >= 5 {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, store.ContextReader(ctx, r))
	if err != nil {
		return fmt.Errorf("put %s: write: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("put %s: read %d bytes, size says %d", key, n, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %s: fsync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %s: close: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("put %s: rename: %w", key, err)
	}
	ok = true
	// The rename is durable only once the directory entry is synced.
	if d, err := os.Open(dir); err == nil {
		syncErr := d.Sync()
		d.Close()
		if syncErr != nil {
			return fmt.Errorf("put %s: fsync dir: %w", key, syncErr)
		}
	}
	return nil
}

// Get opens the object for reading.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || isNotDir(err) {
			return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return f, nil
}

// Stat describes the object.
func (s *Store) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, store.ErrNotFound)
		}
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	if st.IsDir() {
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, store.ErrNotFound)
	}
	return store.ObjectInfo{Key: key, Size: st.Size(), Modified: st.ModTime()}, nil
}

// List returns the objects whose key starts with prefix (a plain string prefix, as in S3), sorted.
func (s *Store) List(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	if strings.Contains(prefix, "\x00") {
		return nil, fmt.Errorf("list %q: prefix contains NUL", prefix)
	}
	// Walk only the deepest directory the prefix names in full.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dirPart := prefix[:i]
		if dirPart != "" {
			if err := ValidateKey(dirPart); err != nil {
				return nil, nil // no valid key lies under an invalid directory
			}
			start = filepath.Join(s.root, filepath.FromSlash(dirPart))
		}
	}
	var out []store.ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == start || strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				return nil
			}
			return filepath.SkipDir
		}
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		out = append(out, store.ObjectInfo{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// WalkDir orders by path element ("a/sub/3" before "ab"), which differs from S3's byte order.
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the object and prunes directories it leaves empty.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	st, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if st.IsDir() {
		return nil // a directory is not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or already gone): stop
			break
		}
	}
	return nil
}

// isNotDir reports ENOTDIR-style errors: a key "a/b" when "a" is a file.
func isNotDir(err error) bool {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return strings.Contains(pe.Err.Error(), "not a directory")
	}
	return false
}
