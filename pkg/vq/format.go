package vq

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// File format: one line of JSON (the header) terminated by '\n', then K*Dim little-endian float32
// values, nothing after. The header's sha256 is the SHA-256 of the header written with an empty
// sha256 field, the '\n', and the data, so a change anywhere in the file is caught on load.
const (
	FormatName    = "bicot-vq"
	FormatVersion = 1
	// maxHeader bounds the header line so a garbage file cannot make Read buffer without end.
	maxHeader = 1 << 14
	// maxValues bounds K*Dim (256 MiB of float32) for the same reason.
	maxValues = 1 << 26
)

// header is the JSON first line of a codebook file. Field order is the write order.
type header struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	Grid      int    `json:"grid"`
	Cell      int    `json:"cell"`
	ImageSize int    `json:"image_size"`
	Patch     int    `json:"patch"`
	Channels  int    `json:"channels"`
	K         int    `json:"k"`
	Tokens    int    `json:"tokens_per_image"`
	Seed      uint64 `json:"seed"`
	DType     string `json:"dtype"`
	DataBytes int    `json:"data_bytes"`
	SHA256    string `json:"sha256"`
}

const dtype = "float32-le"

func (c *Codebook) header() header {
	return header{
		Format: FormatName, Version: FormatVersion,
		Grid: c.cfg.Grid, Cell: c.cfg.Cell, ImageSize: c.ImageSize(),
		Patch: c.patch, Channels: Channels, K: c.k, Tokens: c.TokensPerImage(), Seed: c.seed,
		DType: dtype, DataBytes: 4 * len(c.data),
	}
}

func (c *Codebook) rawData() []byte {
	buf := make([]byte, 4*len(c.data))
	for i, v := range c.data {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return buf
}

// digest is the checksum recorded in (and checked against) the header.
func digest(h header, data []byte) (string, error) {
	h.SHA256 = ""
	hb, err := json.Marshal(h)
	if err != nil {
		return "", err
	}
	s := sha256.New()
	s.Write(hb)
	s.Write([]byte{'\n'})
	s.Write(data)
	return hex.EncodeToString(s.Sum(nil)), nil
}

// WriteTo writes the codebook in the file format.
func (c *Codebook) WriteTo(w io.Writer) (int64, error) {
	h := c.header()
	data := c.rawData()
	sum, err := digest(h, data)
	if err != nil {
		return 0, fmt.Errorf("write codebook: %w", err)
	}
	h.SHA256 = sum
	hb, err := json.Marshal(h)
	if err != nil {
		return 0, fmt.Errorf("write codebook: %w", err)
	}
	n, err := w.Write(append(hb, '\n'))
	if err != nil {
		return int64(n), fmt.Errorf("write codebook header: %w", err)
	}
	m, err := w.Write(data)
	if err != nil {
		return int64(n + m), fmt.Errorf("write codebook data: %w", err)
	}
	return int64(n + m), nil
}

// SHA256 is the checksum the codebook's file carries; two codebooks with the same geometry, seed
// and vectors have the same one.
func (c *Codebook) SHA256() string {
	sum, err := digest(c.header(), c.rawData())
	if err != nil {
		// Marshalling a struct of ints and strings cannot fail.
		panic(err)
	}
	return sum
}

// Save writes the codebook to path atomically (temporary file, then rename), creating the
// directory if needed.
func (c *Codebook) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := c.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save codebook %s: %w", path, err)
	}
	return nil
}

// ErrChecksum is returned (wrapped) when a codebook file's content does not match its checksum.
var ErrChecksum = errors.New("checksum mismatch")

// Read parses a codebook in the file format, checking the header, sizes, checksum and values.
func Read(r io.Reader) (*Codebook, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxHeader), maxHeader)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) >= maxHeader {
			return nil, fmt.Errorf("read codebook: no header line within %d bytes", maxHeader)
		}
		return nil, fmt.Errorf("read codebook: header line (%d bytes, no newline): %w", len(line), err)
	}
	raw := bytes.TrimSuffix(line, []byte{'\n'})
	var h header
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("read codebook: header is not %s JSON: %w", FormatName, err)
	}
	// The header must be exactly what this version writes, so a changed byte in it cannot slip
	// through JSON's tolerance (case-insensitive keys, spacing).
	if canon, err := json.Marshal(h); err != nil || !bytes.Equal(canon, raw) {
		return nil, fmt.Errorf("read codebook: header is not in canonical form: %w", ErrChecksum)
	}
	if h.Format != FormatName {
		return nil, fmt.Errorf("read codebook: format %q, want %q", h.Format, FormatName)
	}
	if h.Version != FormatVersion {
		return nil, fmt.Errorf("read codebook: version %d, this build reads version %d", h.Version, FormatVersion)
	}
	if h.DType != dtype || h.Channels != Channels {
		return nil, fmt.Errorf("read codebook: dtype %q with %d channels, want %q with %d", h.DType, h.Channels, dtype, Channels)
	}
	cfg := scene.Config{Grid: h.Grid, Cell: h.Cell}
	if err := checkGeometry(cfg, h.Patch); err != nil {
		return nil, fmt.Errorf("read codebook: %w", err)
	}
	if h.ImageSize != cfg.ImageSize() {
		return nil, fmt.Errorf("read codebook: image size %d does not match grid %d x cell %d", h.ImageSize, h.Grid, h.Cell)
	}
	dim := h.Patch * h.Patch * Channels
	if h.K < 1 || h.K > maxValues/dim {
		return nil, fmt.Errorf("read codebook: k %d out of range [1,%d]", h.K, maxValues/dim)
	}
	if want := 4 * h.K * dim; h.DataBytes != want {
		return nil, fmt.Errorf("read codebook: data_bytes %d, want %d for k %d of dim %d", h.DataBytes, want, h.K, dim)
	}
	if side := h.ImageSize / h.Patch; h.Tokens != side*side {
		return nil, fmt.Errorf("read codebook: tokens_per_image %d, want %d", h.Tokens, side*side)
	}
	// The rest of the stream: what bufio already buffered, then r itself.
	rest := io.MultiReader(br, r)
	data := make([]byte, h.DataBytes)
	if n, err := io.ReadFull(rest, data); err != nil {
		return nil, fmt.Errorf("read codebook: truncated: %d of %d data bytes: %w", n, h.DataBytes, err)
	}
	var one [1]byte
	if n, _ := rest.Read(one[:]); n > 0 {
		return nil, fmt.Errorf("read codebook: unexpected bytes after %d data bytes", h.DataBytes)
	}
	sum, err := digest(h, data)
	if err != nil {
		return nil, fmt.Errorf("read codebook: %w", err)
	}
	if sum != h.SHA256 {
		return nil, fmt.Errorf("read codebook: sha256 %s, header says %s: %w", sum, h.SHA256, ErrChecksum)
	}
	vals := make([]float32, h.DataBytes/4)
	for i := range vals {
		vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	cb, err := newCodebook(cfg, h.Patch, h.K, h.Seed, vals)
	if err != nil {
		return nil, fmt.Errorf("read codebook: %w", err)
	}
	return cb, nil
}

// Load reads a codebook file.
func Load(path string) (*Codebook, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load codebook %s: %w", path, err)
	}
	defer f.Close()
	cb, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("load codebook %s: %w", path, err)
	}
	return cb, nil
}

// LoadFor reads a codebook file and checks that it fits images of cfg.
func LoadFor(path string, cfg scene.Config) (*Codebook, error) {
	cb, err := Load(path)
	if err != nil {
		return nil, err
	}
	if err := cb.Check(cfg); err != nil {
		return nil, fmt.Errorf("load codebook %s: %w", path, err)
	}
	return cb, nil
}
