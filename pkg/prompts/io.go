package prompts

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// maxLine bounds one JSONL line; the reference's longest line is well under 1 KiB.
const maxLine = 1 << 20

// knownFields are the keys Prompt maps to its own fields, in the order Marshal writes them.
var knownFields = []string{"prompt", "task_type", "nouns", "attr_nouns", "spatial_info", "numeracy_info", "spec"}

// MarshalJSON writes the known fields in a fixed order (absent ones omitted) followed by Extra in
// key order, compactly, so that files written twice are byte-identical.
func (p Prompt) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	put := func(key string, v any) error {
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("field %q: %w", key, err)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		k, _ := json.Marshal(key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(raw)
		return nil
	}
	type field struct {
		key     string
		present bool
		v       any
	}
	fields := []field{
		{"prompt", true, p.Prompt},
		{"task_type", true, p.TaskType},
		{"nouns", p.Nouns != nil, p.Nouns},
		{"attr_nouns", p.AttrNouns != nil, p.AttrNouns},
		{"spatial_info", p.SpatialInfo != nil, p.SpatialInfo},
		{"numeracy_info", p.NumeracyInfo != nil, p.NumeracyInfo},
		{"spec", p.Spec != nil, p.Spec},
	}
	for _, f := range fields {
		if !f.present {
			continue
		}
		if err := put(f.key, f.v); err != nil {
			return nil, err
		}
	}
	keys := make([]string, 0, len(p.Extra))
	for k := range p.Extra {
		if slices.Contains(knownFields, k) {
			return nil, fmt.Errorf("extra field %q shadows a known field", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !json.Valid(p.Extra[k]) {
			return nil, fmt.Errorf("extra field %q: invalid JSON", k)
		}
		if err := put(k, p.Extra[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the known fields and keeps every other field, verbatim, in Extra. A field of
// the wrong JSON type is an error naming the field.
func (p *Prompt) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("not a JSON object")
	}
	*p = Prompt{}
	targets := map[string]any{
		"prompt":        &p.Prompt,
		"task_type":     &p.TaskType,
		"nouns":         &p.Nouns,
		"attr_nouns":    &p.AttrNouns,
		"spatial_info":  &p.SpatialInfo,
		"numeracy_info": &p.NumeracyInfo,
		"spec":          &p.Spec,
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad field reported must not depend on map order
	for _, k := range keys {
		v := raw[k]
		t, ok := targets[k]
		if !ok {
			if p.Extra == nil {
				p.Extra = map[string]json.RawMessage{}
			}
			p.Extra[k] = append(json.RawMessage(nil), v...)
			continue
		}
		if err := json.Unmarshal(v, t); err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	return nil
}

// Validate checks one prompt: a non-empty prompt text, a known task_type, a complete spatial_info,
// numeracy entries with a name and num >= 1, and a valid spec when present.
func (p Prompt) Validate() error {
	if strings.TrimSpace(p.Prompt) == "" {
		return errors.New("prompt is missing or empty")
	}
	if p.TaskType == "" {
		return errors.New("task_type is missing or empty")
	}
	if !slices.Contains(TaskTypes, p.TaskType) {
		return fmt.Errorf("unknown task_type %q (want one of %s)", p.TaskType, strings.Join(TaskTypes, ", "))
	}
	if s := p.SpatialInfo; s != nil {
		for _, f := range []struct{ name, v string }{{"obj1", s.Obj1}, {"obj2", s.Obj2}, {"locality", s.Locality}} {
			if strings.TrimSpace(f.v) == "" {
				return fmt.Errorf("spatial_info.%s is missing or empty", f.name)
			}
		}
	}
	for i, n := range p.NumeracyInfo {
		if strings.TrimSpace(n.ObjName) == "" {
			return fmt.Errorf("numeracy_info[%d].obj_name is missing or empty", i)
		}
		if n.Num < 1 {
			return fmt.Errorf("numeracy_info[%d].num is %d, want >= 1", i, n.Num)
		}
	}
	if p.Spec != nil {
		if err := p.Spec.Validate(); err != nil {
			return fmt.Errorf("invalid spec: %w", err)
		}
	}
	return nil
}

// Read parses a prompt file. name is used in error messages, which have the form
// "name:LINE: reason" for the first bad line; on any error no prompts are returned.
//
// Lines holding only white space are skipped (they still count for line numbers): editors and
// concatenation tools leave them, and they carry no prompt.
func Read(r io.Reader, name string) ([]Prompt, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out []Prompt
	for line := 1; ; line++ {
		text, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if line == 1 {
			// Some editors start UTF-8 files with a byte order mark; it is not part of the JSON.
			text = bytes.TrimPrefix(text, []byte("\xef\xbb\xbf"))
		}
		if len(bytes.TrimSpace(text)) > 0 {
			var p Prompt
			if uerr := json.Unmarshal(text, &p); uerr != nil {
				return nil, fmt.Errorf("%s:%d: bad JSON: %w", name, line, uerr)
			}
			if verr := p.Validate(); verr != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, line, verr)
			}
			out = append(out, p)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
	}
}

// readLine returns the next line without its terminator; io.EOF comes with the last (possibly
// empty) piece.
func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("line longer than %d bytes", maxLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		return buf, err
	}
}

// ReadFile reads and validates the prompt file at path.
func ReadFile(path string) ([]Prompt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read prompts: %w", err)
	}
	defer f.Close()
	return Read(f, path)
}

// Write writes prompts as JSON lines. Every prompt is validated first, so a writer never produces
// a file its reader rejects; an error names the prompt's index.
func Write(w io.Writer, ps []Prompt) error {
	bw := bufio.NewWriter(w)
	for i, p := range ps {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("write prompt %d: %w", i, err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("write prompt %d: %w", i, err)
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write prompts: %w", err)
	}
	return nil
}

// WriteFile writes prompts to path atomically (a temporary file in the same directory, renamed
// into place), so readers never see a half-written file.
func WriteFile(path string, ps []Prompt) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write prompts %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, ps); err != nil {
		tmp.Close()
		return fmt.Errorf("write prompts %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write prompts %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write prompts %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write prompts %s: %w", path, err)
	}
	return nil
}

// Summary counts a prompt file's prompts per task type.
type Summary struct {
	Total     int            `json:"total"`
	TaskTypes map[string]int `json:"task_types"`
}

// Summarize counts ps per task type.
func Summarize(ps []Prompt) Summary {
	s := Summary{Total: len(ps), TaskTypes: map[string]int{}}
	for _, p := range ps {
		s.TaskTypes[p.TaskType]++
	}
	return s
}

// Check reads and validates the file at path and counts its prompts per task type. Its error is
// the first bad line's "path:LINE: reason".
func Check(path string) (Summary, error) {
	ps, err := ReadFile(path)
	if err != nil {
		return Summary{}, err
	}
	return Summarize(ps), nil
}

// JSON renders the summary as {"total": N, "task_types": {"color": n, ...}}, task types in
// TaskTypes order and only those present.
func (s Summary) JSON() string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"total": %d, "task_types": {`, s.Total)
	n := 0
	for _, t := range TaskTypes {
		c, ok := s.TaskTypes[t]
		if !ok {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		fmt.Fprintf(&b, "%q: %d", t, c)
	}
	b.WriteString("}}")
	return b.String()
}

// Text renders the summary as one "task_type count" line per present task type and a final
// "total N" line.
func (s Summary) Text() string {
	var b strings.Builder
	for _, t := range TaskTypes {
		if c, ok := s.TaskTypes[t]; ok {
			fmt.Fprintf(&b, "%-9s %d\n", t, c)
		}
	}
	fmt.Fprintf(&b, "%-9s %d\n", "total", s.Total)
	return b.String()
}

// ReadPool reads a run's prompt file and returns Repeat(prompts, repeats): the pool every role of
// a run reads through the run config's prompt_repeats, so the pool, and the shuffled order the
// coordinator draws from it, is the same everywhere.
func ReadPool(path string, repeats map[string]int) ([]Prompt, error) {
	if err := CheckRepeatKeys(repeats); err != nil {
		return nil, fmt.Errorf("prompt_repeats: %w", err)
	}
	for _, t := range slices.Sorted(maps.Keys(repeats)) {
		if repeats[t] < 0 {
			return nil, fmt.Errorf("prompt_repeats: %s %d, want >= 0", t, repeats[t])
		}
	}
	ps, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := Repeat(ps, repeats)
	if len(pool) == 0 {
		return nil, fmt.Errorf("prompts %s: prompt_repeats leaves no prompt", path)
	}
	return pool, nil
}

// CheckTaskTypes names the first key of m (sorted) that is not a task type.
func CheckTaskTypes[V any](m map[string]V) error {
	for _, t := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(TaskTypes, t) {
			return fmt.Errorf("unknown task type %q (want one of %s)", t, strings.Join(TaskTypes, ", "))
		}
	}
	return nil
}

// CheckRepeatKeys names the first key of m (sorted) that is neither a task type nor a task type
// and a form joined by a slash ("knowledge/count", see RepeatKey).
func CheckRepeatKeys[V any](m map[string]V) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		t, form, qualified := strings.Cut(k, "/")
		if !slices.Contains(TaskTypes, t) {
			return fmt.Errorf("unknown task type %q in %q (want one of %s, optionally /form)", t, k, strings.Join(TaskTypes, ", "))
		}
		if qualified && !slices.Contains(Forms, form) {
			return fmt.Errorf("unknown form %q in %q (want one of %s)", form, k, strings.Join(Forms, ", "))
		}
	}
	return nil
}

// RepeatKey is the key of repeats that decides how often p goes into a pool: its task type and
// form ("knowledge/count") where repeats names that, else its task type, else "" (once).
func RepeatKey(p Prompt, repeats map[string]int) string {
	if k := p.TaskType + "/" + Form(p); hasKey(repeats, k) {
		return k
	}
	if hasKey(repeats, p.TaskType) {
		return p.TaskType
	}
	return ""
}

func hasKey(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// Repeat puts every prompt repeats[key] times into a pool, the key being the prompt's task type
// and form ("knowledge/count") where repeats names that, else its task type (RepeatKey); 0
// leaves the prompts out, and a prompt whose keys repeats does not name stays once. The pool
// holds the prompts not left out, in their order, then round r = 1, 2, ... with the prompts
// repeated more than r times, again in order - as if the file went on with those prompts again.
// A form key lets a run weight a kind of request inside a type: knowledge prompts that name a
// colour or a count indirectly are a few dozen among hundreds of relation ones.
func Repeat(ps []Prompt, repeats map[string]int) []Prompt {
	if len(repeats) == 0 {
		return ps
	}
	times := func(p Prompt) int {
		if k := RepeatKey(p, repeats); k != "" {
			return repeats[k]
		}
		return 1
	}
	most := 1
	for _, n := range repeats {
		most = max(most, n)
	}
	var pool []Prompt
	for round := 0; round < most; round++ {
		for _, p := range ps {
			if times(p) > round {
				pool = append(pool, p)
			}
		}
	}
	return pool
}
