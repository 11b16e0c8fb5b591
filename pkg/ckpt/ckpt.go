// Package ckpt writes and finds training checkpoints on any store.Store (a local directory or S3),
// and distributes policy weights to rollout workers.
//
// A checkpoint is a set of named parts (weights, optimizer state, RNG state, data cursor, run-state
// snapshot: opaque bytes here) stored object by object under
//
//	<run>/checkpoints/<step, 12 digits>/<part>
//
// and committed by <run>/checkpoints/<step>/MANIFEST.json, written last, which lists every part
// with its size and SHA-256. Objects appear atomically in every store, so a crash leaves either a
// committed checkpoint or parts without a manifest, which no reader ever loads. Latest returns the
// newest manifest whose parts all verify; a checkpoint damaged after the fact (a part missing,
// truncated or altered, an unreadable manifest) is skipped with a warning and the one before it is
// used. Prune keeps the newest N and the best K by a metric and removes the rest, manifest first so
// that a checkpoint stops being committed before its parts go.
package ckpt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/store"
)

// ManifestVersion is the manifest format this build writes and reads.
const ManifestVersion = 1

// ManifestName is the object, in a checkpoint's directory, that commits it.
const ManifestName = "MANIFEST.json"

// Conventional part names.
const (
	PartWeights  = "weights"
	PartCursor   = "cursor"
	PartRunState = "runstate"
)

// Errors.
var (
	ErrNoCheckpoint = errors.New("no committed checkpoint")
	ErrCorrupt      = errors.New("checkpoint data does not match its manifest")
	ErrExists       = errors.New("checkpoint already committed")
)

// PartInfo describes one stored part.
type PartInfo struct {
	Name   string `json:"name"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest commits a checkpoint.
type Manifest struct {
	Version       int                `json:"version"`
	Run           string             `json:"run"`
	Step          int64              `json:"step"`
	PolicyVersion int64              `json:"policy_version"`
	Parts         []PartInfo         `json:"parts"`
	Metrics       map[string]float64 `json:"metrics,omitempty"`
	Created       time.Time          `json:"created"`
	// Key is where the manifest is stored; filled when saved or read, not stored in it.
	Key string `json:"-"`
}

// Part returns the named part's entry.
func (m Manifest) Part(name string) (PartInfo, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return PartInfo{}, false
}

// Size is the total size of the parts.
func (m Manifest) Size() int64 {
	var n int64
	for _, p := range m.Parts {
		n += p.Size
	}
	return n
}

// Meta is what a checkpoint records besides its parts.
type Meta struct {
	PolicyVersion int64
	Metrics       map[string]float64
	Created       time.Time // zero: now
}

// Option adjusts Latest, List and Prune.
type Option func(*options)

type options struct {
	log       zerolog.Logger
	haveLog   bool
	sizesOnly bool
}

// WithLogger sets the logger that reports skipped checkpoints (default: zerolog.Ctx(ctx)).
func WithLogger(log zerolog.Logger) Option {
	return func(o *options) { o.log, o.haveLog = log, true }
}

// VerifySizesOnly makes Latest check that every part exists with its recorded size instead of
// reading and hashing it (for very large checkpoints; Load still verifies the hash).
func VerifySizesOnly() Option { return func(o *options) { o.sizesOnly = true } }

func collect(ctx context.Context, opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if !o.haveLog {
		o.log = *zerolog.Ctx(ctx)
	}
	return o
}

var partName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validateRun(run string) error {
	if run == "" {
		return errors.New("empty run name")
	}
	for _, seg := range strings.Split(run, "/") {
		if !partName.MatchString(seg) {
			return fmt.Errorf("run name %q: segment %q must be letters, digits, '.', '_' or '-'", run, seg)
		}
	}
	return nil
}

// Prefix is the key prefix of all of a run's checkpoints.
func Prefix(run string) string { return run + "/checkpoints/" }

// Dir is the key prefix of one checkpoint, ending in '/'.
func Dir(run string, step int64) string { return fmt.Sprintf("%s%012d/", Prefix(run), step) }

// ManifestKey is where the checkpoint of step is committed.
func ManifestKey(run string, step int64) string { return Dir(run, step) + ManifestName }

// Sum returns the hex SHA-256 of data.
func Sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// checksummedPutter is implemented by stores that accept a precomputed SHA-256 (the S3 store
// records it in object metadata); using it saves hashing every part twice.
type checksummedPutter interface {
	PutSHA256(ctx context.Context, key string, r io.Reader, size int64, sum string) error
}

func put(ctx context.Context, st store.Store, key string, data []byte, sum string) error {
	if p, ok := st.(checksummedPutter); ok {
		return p.PutSHA256(ctx, key, bytes.NewReader(data), int64(len(data)), sum)
	}
	return st.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
}

// saveConcurrency bounds parallel part uploads: enough to overlap hashing and small parts with
// transfers, while a large part already goes up in parallel multipart chunks.
const saveConcurrency = 4

// Save writes a checkpoint of step: every part, then the manifest. It refuses a step whose
// manifest exists (ErrExists): a committed checkpoint is never rewritten under its readers.
func Save(ctx context.Context, st store.Store, run string, step int64, parts map[string][]byte, meta Meta) (Manifest, error) {
	if err := validateRun(run); err != nil {
		return Manifest{}, fmt.Errorf("save checkpoint: %w", err)
	}
	if step < 0 {
		return Manifest{}, fmt.Errorf("save checkpoint %s: negative step %d", run, step)
	}
	if len(parts) == 0 {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: no parts", run, step)
	}
	for k, v := range meta.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Manifest{}, fmt.Errorf("save checkpoint %s step %d: metric %q is %v", run, step, k, v)
		}
	}
	names := make([]string, 0, len(parts))
	for name := range parts {
		if !partName.MatchString(name) || name == ManifestName {
			return Manifest{}, fmt.Errorf("save checkpoint %s step %d: bad part name %q (letters, digits, '.', '_', '-'; not %s)", run, step, name, ManifestName)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	mkey := ManifestKey(run, step)
	if _, err := st.Stat(ctx, mkey); err == nil {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: %w", run, step, ErrExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: %w", run, step, err)
	}

	m := Manifest{
		Version: ManifestVersion, Run: run, Step: step, PolicyVersion: meta.PolicyVersion,
		Metrics: meta.Metrics, Created: meta.Created, Parts: make([]PartInfo, len(names)), Key: mkey,
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, saveConcurrency)
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		data := parts[name]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pi := PartInfo{Name: name, Key: Dir(run, step) + name, Size: int64(len(data)), SHA256: Sum(data)}
			if err := put(ctx, st, pi.Key, data, pi.SHA256); err != nil {
				errs[i] = fmt.Errorf("part %s: %w", name, err)
				cancel()
				return
			}
			m.Parts[i] = pi
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: %w", run, step, err)
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: encode manifest: %w", run, step, err)
	}
	if err := put(ctx, st, mkey, body, Sum(body)); err != nil {
		return Manifest{}, fmt.Errorf("save checkpoint %s step %d: commit manifest: %w", run, step, err)
	}
	return m, nil
}

// ReadManifest reads and validates the manifest at key.
func ReadManifest(ctx context.Context, st store.Store, key string) (Manifest, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", key, err)
	}
	defer r.Close()
	body, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", key, err)
	}
	return parseManifest(key, body)
}

// parseManifest decodes and validates the manifest body stored at key.
func parseManifest(key string, body []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w: %v", key, ErrCorrupt, err)
	}
	m.Key = key
	if err := m.validate(); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w: %v", key, ErrCorrupt, err)
	}
	return m, nil
}

func (m Manifest) validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("version %d, this build reads %d", m.Version, ManifestVersion)
	}
	if err := validateRun(m.Run); err != nil {
		return err
	}
	if m.Key != "" && m.Key != ManifestKey(m.Run, m.Step) {
		return fmt.Errorf("names run %s step %d, which belongs at %s", m.Run, m.Step, ManifestKey(m.Run, m.Step))
	}
	if len(m.Parts) == 0 {
		return errors.New("no parts")
	}
	seen := map[string]bool{}
	for _, p := range m.Parts {
		switch {
		case seen[p.Name]:
			return fmt.Errorf("part %q listed twice", p.Name)
		case p.Key != Dir(m.Run, m.Step)+p.Name || !partName.MatchString(p.Name):
			return fmt.Errorf("part %q at key %q outside its checkpoint", p.Name, p.Key)
		case p.Size < 0:
			return fmt.Errorf("part %q: size %d", p.Name, p.Size)
		case len(p.SHA256) != 64:
			return fmt.Errorf("part %q: sha256 %q", p.Name, p.SHA256)
		}
		seen[p.Name] = true
	}
	return nil
}

// stepOf parses the step from a key under Prefix(run): "<step>/<name>".
func stepOf(run, key string) (int64, string, bool) {
	rest, ok := strings.CutPrefix(key, Prefix(run))
	if !ok {
		return 0, "", false
	}
	dir, name, ok := strings.Cut(rest, "/")
	if !ok || len(dir) != 12 {
		return 0, "", false
	}
	step, err := strconv.ParseInt(dir, 10, 64)
	if err != nil || step < 0 {
		return 0, "", false
	}
	return step, name, true
}

// scan groups a run's checkpoint objects by step and says which steps have a manifest.
func scan(ctx context.Context, st store.Store, run string) (map[int64][]string, map[int64]bool, error) {
	if err := validateRun(run); err != nil {
		return nil, nil, err
	}
	objs, err := st.List(ctx, Prefix(run))
	if err != nil {
		return nil, nil, fmt.Errorf("list checkpoints of %s: %w", run, err)
	}
	keys := map[int64][]string{}
	committed := map[int64]bool{}
	for _, o := range objs {
		step, name, ok := stepOf(run, o.Key)
		if !ok {
			continue
		}
		keys[step] = append(keys[step], o.Key)
		if name == ManifestName {
			committed[step] = true
		}
	}
	return keys, committed, nil
}

// List returns the run's readable manifests, oldest first, without verifying parts. Unreadable
// manifests are skipped with a warning.
func List(ctx context.Context, st store.Store, run string, opts ...Option) ([]Manifest, error) {
	o := collect(ctx, opts)
	_, committed, err := scan(ctx, st, run)
	if err != nil {
		return nil, err
	}
	steps := sortedSteps(committed)
	var out []Manifest
	for _, step := range steps {
		m, err := ReadManifest(ctx, st, ManifestKey(run, step))
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			o.log.Warn().Err(err).Str("run", run).Int64("step", step).Msg("skipping unreadable checkpoint manifest")
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

func sortedSteps(set map[int64]bool) []int64 {
	steps := make([]int64, 0, len(set))
	for s := range set {
		steps = append(steps, s)
	}
	slices.Sort(steps)
	return steps
}

// Latest returns the newest committed checkpoint whose parts all verify. Damaged checkpoints are
// skipped with a warning naming the step and the reason; ErrNoCheckpoint when none is good.
func Latest(ctx context.Context, st store.Store, run string, opts ...Option) (Manifest, error) {
	o := collect(ctx, opts)
	_, committed, err := scan(ctx, st, run)
	if err != nil {
		return Manifest{}, err
	}
	steps := sortedSteps(committed)
	for i := len(steps) - 1; i >= 0; i-- {
		step := steps[i]
		m, err := ReadManifest(ctx, st, ManifestKey(run, step))
		if err == nil {
			err = Verify(ctx, st, m, o.sizesOnly)
		}
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return Manifest{}, fmt.Errorf("latest checkpoint of %s: %w", run, ctx.Err())
		}
		o.log.Warn().Err(err).Str("run", run).Int64("step", step).Msg("skipping corrupted checkpoint, trying the previous one")
	}
	return Manifest{}, fmt.Errorf("run %s: %w", run, ErrNoCheckpoint)
}

// Verify checks every part of m: present with its size and, unless sizesOnly, its SHA-256.
func Verify(ctx context.Context, st store.Store, m Manifest, sizesOnly bool) error {
	for _, p := range m.Parts {
		if sizesOnly {
			info, err := st.Stat(ctx, p.Key)
			if err != nil {
				return fmt.Errorf("part %s: %w", p.Key, err)
			}
			if info.Size != p.Size {
				return fmt.Errorf("part %s: %d bytes, manifest says %d: %w", p.Key, info.Size, p.Size, ErrCorrupt)
			}
			continue
		}
		if err := readVerified(ctx, st, p, io.Discard); err != nil {
			return err
		}
	}
	return nil
}

func readVerified(ctx context.Context, st store.Store, p PartInfo, w io.Writer) error {
	r, err := st.Get(ctx, p.Key)
	if err != nil {
		return fmt.Errorf("part %s: %w", p.Key, err)
	}
	defer r.Close()
	h := sha256.New()
	// Read one byte past the recorded size so a grown object is caught without reading it all.
	n, err := io.Copy(io.MultiWriter(h, w), io.LimitReader(r, p.Size+1))
	if err != nil {
		return fmt.Errorf("part %s: %w", p.Key, err)
	}
	if n != p.Size {
		return fmt.Errorf("part %s: %d bytes, manifest says %d: %w", p.Key, n, p.Size, ErrCorrupt)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("part %s: sha256 %s, manifest says %s: %w", p.Key, got, p.SHA256, ErrCorrupt)
	}
	return nil
}

// Load reads one part of a checkpoint and verifies it against the manifest.
func Load(ctx context.Context, st store.Store, m Manifest, part string) ([]byte, error) {
	p, ok := m.Part(part)
	if !ok {
		return nil, fmt.Errorf("checkpoint %s step %d has no part %q", m.Run, m.Step, part)
	}
	var buf bytes.Buffer
	buf.Grow(int(p.Size))
	if err := readVerified(ctx, st, p, &buf); err != nil {
		return nil, fmt.Errorf("load checkpoint %s step %d: %w", m.Run, m.Step, err)
	}
	return buf.Bytes(), nil
}

// Retention says which checkpoints Prune keeps: the KeepLast newest (at least 1) and the KeepBest
// best by Metrics[Metric] (higher is better unless LowerIsBetter).
type Retention struct {
	KeepLast      int
	KeepBest      int
	Metric        string
	LowerIsBetter bool
}

// Prune deletes the checkpoints Retention does not keep, and the debris of saves that crashed
// (parts without a manifest) below the newest committed step; a save in progress above it is left
// alone. It returns the steps removed, ascending.
func Prune(ctx context.Context, st store.Store, run string, r Retention, opts ...Option) ([]int64, error) {
	if r.KeepLast < 1 {
		return nil, fmt.Errorf("prune %s: keep-last %d, want >= 1 (the newest checkpoint is never pruned)", run, r.KeepLast)
	}
	if r.KeepBest < 0 || (r.KeepBest > 0 && r.Metric == "") {
		return nil, fmt.Errorf("prune %s: keep-best %d needs a metric name", run, r.KeepBest)
	}
	o := collect(ctx, opts)
	keys, committed, err := scan(ctx, st, run)
	if err != nil {
		return nil, err
	}
	steps := sortedSteps(committed)
	if len(steps) == 0 {
		return nil, nil
	}
	newest := steps[len(steps)-1]
	keep := map[int64]bool{}
	for _, s := range steps[max(0, len(steps)-r.KeepLast):] {
		keep[s] = true
	}
	if r.KeepBest > 0 {
		ms, err := List(ctx, st, run, opts...)
		if err != nil {
			return nil, err
		}
		var scored []Manifest
		for _, m := range ms {
			if _, ok := m.Metrics[r.Metric]; ok {
				scored = append(scored, m)
			}
		}
		sort.SliceStable(scored, func(i, j int) bool {
			a, b := scored[i].Metrics[r.Metric], scored[j].Metrics[r.Metric]
			if a == b {
				return scored[i].Step > scored[j].Step
			}
			if r.LowerIsBetter {
				return a < b
			}
			return a > b
		})
		for _, m := range scored[:min(r.KeepBest, len(scored))] {
			keep[m.Step] = true
		}
	}
	var removed []int64
	all := make([]int64, 0, len(keys))
	for s := range keys {
		all = append(all, s)
	}
	slices.Sort(all)
	for _, s := range all {
		if keep[s] || (!committed[s] && s > newest) {
			continue
		}
		// Manifest first: from then on the checkpoint is not committed, whatever happens next.
		objs := slices.Clone(keys[s])
		slices.SortFunc(objs, func(a, b string) int {
			am, bm := strings.HasSuffix(a, "/"+ManifestName), strings.HasSuffix(b, "/"+ManifestName)
			switch {
			case am && !bm:
				return -1
			case bm && !am:
				return 1
			}
			return strings.Compare(a, b)
		})
		for _, k := range objs {
			if err := st.Delete(ctx, k); err != nil {
				return removed, fmt.Errorf("prune %s step %d: %w", run, s, err)
			}
		}
		o.log.Info().Str("run", run).Int64("step", s).Bool("committed", committed[s]).Msg("pruned checkpoint")
		removed = append(removed, s)
	}
	return removed, nil
}
