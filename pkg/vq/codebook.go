// Package vq is the image tokenizer of the scene world: a codebook of K patch vectors (P x P RGB
// patches) learned by k-means over rendered scenes. Encode turns an image into K-ary codes in raster
// order of its patches, Decode turns codes back into pixels. The policy emits these codes as its
// image tokens (the token-level CoT of BiCoT-GRPO), so TokensPerImage fixes the length of every
// image sequence and K the size of the policy's image-token head.
//
// Patches are aligned to the scene grid (P divides the cell size), so every patch of every scene is
// a fixed piece of one object template in one colour, or background. With K at least the number of
// distinct patches the codebook reproduces every scene exactly; smaller K trades exactness for a
// smaller output head. The file format (format.go) is self-describing and checksummed; training
// lives in train.go, and Build (build.go, `learner codebook`) trains, measures on held-out scenes
// and writes a codebook from a BuildConfig.
package vq

import (
	"fmt"
	"image"
	"math"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Channels per pixel stored in a patch vector (RGB; alpha is always opaque on the canvas).
const Channels = 3

// Codebook maps codes to patch vectors. A Codebook is immutable after construction and safe for
// concurrent use.
type Codebook struct {
	cfg   scene.Config
	patch int
	k     int
	seed  uint64
	// data holds K vectors of Dim values in [0,255], code-major, each patch row-major, RGB.
	data []float32
	// norms caches the squared norm of each vector for nearest-code search.
	norms []float64
	// exact maps the bytes of each integer-valued vector to its lowest code, so patches that are
	// exactly a code (every patch of a clean render at K >= distinct patches) skip the search.
	exact map[string]int
}

// newCodebook checks the geometry and values and builds the lookup caches.
func newCodebook(cfg scene.Config, patch, k int, seed uint64, data []float32) (*Codebook, error) {
	if err := checkGeometry(cfg, patch); err != nil {
		return nil, fmt.Errorf("codebook: %w", err)
	}
	dim := patch * patch * Channels
	if k < 1 {
		return nil, fmt.Errorf("codebook: k %d < 1", k)
	}
	if len(data) != k*dim {
		return nil, fmt.Errorf("codebook: %d values, want k %d x dim %d = %d", len(data), k, dim, k*dim)
	}
	norms := make([]float64, k)
	for i, v := range data {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 255 {
			return nil, fmt.Errorf("codebook: code %d value %d is %v, want a number in [0,255]", i/dim, i%dim, v)
		}
		norms[i/dim] += f * f
	}
	exact := map[string]int{}
	key := make([]byte, dim)
	for code := range k {
		integral := true
		for i, v := range data[code*dim : (code+1)*dim] {
			if v != float32(math.Round(float64(v))) {
				integral = false
				break
			}
			key[i] = uint8(v)
		}
		if _, dup := exact[string(key)]; integral && !dup {
			exact[string(key)] = code
		}
	}
	return &Codebook{cfg: cfg, patch: patch, k: k, seed: seed, data: data, norms: norms, exact: exact}, nil
}

// checkGeometry requires patches that tile each cell exactly, so that patches never straddle two
// objects.
func checkGeometry(cfg scene.Config, patch int) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if patch < 1 || patch > cfg.Cell || cfg.Cell%patch != 0 {
		return fmt.Errorf("patch %d must divide the cell size %d", patch, cfg.Cell)
	}
	return nil
}

// K is the number of codes.
func (c *Codebook) K() int { return c.k }

// Patch is the patch side in pixels.
func (c *Codebook) Patch() int { return c.patch }

// Config is the canvas the codebook was trained for.
func (c *Codebook) Config() scene.Config { return c.cfg }

// Seed is the training seed recorded in the file.
func (c *Codebook) Seed() uint64 { return c.seed }

// ImageSize is the side of the images the codebook encodes and decodes.
func (c *Codebook) ImageSize() int { return c.cfg.ImageSize() }

// PatchesPerSide is the number of patches along each image side.
func (c *Codebook) PatchesPerSide() int { return c.cfg.ImageSize() / c.patch }

// TokensPerImage is the length of an image's code sequence.
func (c *Codebook) TokensPerImage() int { n := c.PatchesPerSide(); return n * n }

// Dim is the length of a patch vector (P*P*3).
func (c *Codebook) Dim() int { return c.patch * c.patch * Channels }

// Vector returns a copy of a code's patch vector (values in [0,255], row-major RGB), for instance
// to initialise image-token embeddings.
func (c *Codebook) Vector(code int) ([]float32, error) {
	if code < 0 || code >= c.k {
		return nil, fmt.Errorf("codebook: code %d out of range [0,%d)", code, c.k)
	}
	d := c.Dim()
	return append([]float32(nil), c.data[code*d:(code+1)*d]...), nil
}

// Check reports whether the codebook fits images of cfg.
func (c *Codebook) Check(cfg scene.Config) error {
	if cfg != c.cfg {
		return fmt.Errorf("codebook trained for grid %d cell %d (%dx%d images), want grid %d cell %d (%dx%d images)",
			c.cfg.Grid, c.cfg.Cell, c.ImageSize(), c.ImageSize(), cfg.Grid, cfg.Cell, cfg.ImageSize(), cfg.ImageSize())
	}
	return nil
}

// Encode returns the nearest code of each patch in raster order (row by row of patches). The image
// must be exactly ImageSize x ImageSize; ties go to the lower code, so encoding is deterministic.
func (c *Codebook) Encode(img image.Image) ([]int, error) {
	if img == nil {
		return nil, fmt.Errorf("encode: nil image")
	}
	b := img.Bounds()
	n := c.ImageSize()
	if b.Dx() != n || b.Dy() != n {
		return nil, fmt.Errorf("encode: image is %dx%d, codebook expects %dx%d", b.Dx(), b.Dy(), n, n)
	}
	rgba := scene.ToRGBA(img)
	side := c.PatchesPerSide()
	rb := rgba.Bounds()
	codes := make([]int, 0, side*side)
	key := make([]byte, c.Dim())
	vec := make([]float64, c.Dim())
	for py := range side {
		for px := range side {
			patchBytes(rgba, rb.Min.X+px*c.patch, rb.Min.Y+py*c.patch, c.patch, key)
			if code, ok := c.exact[string(key)]; ok {
				codes = append(codes, code)
				continue
			}
			for i, b := range key {
				vec[i] = float64(b)
			}
			codes = append(codes, c.nearest(vec))
		}
	}
	return codes, nil
}

// nearest returns the code minimising the squared distance to vec.
func (c *Codebook) nearest(vec []float64) int {
	best, bestD := 0, math.Inf(1)
	d := c.Dim()
	for k := range c.k {
		v := c.data[k*d : (k+1)*d]
		dot := 0.0
		for i, x := range vec {
			dot += x * float64(v[i])
		}
		if dist := c.norms[k] - 2*dot; dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

// Decode paints each code's patch vector (rounded to bytes) in raster order. It fails on a wrong
// number of codes or a code outside [0, K), which a policy with a larger vocabulary can emit.
func (c *Codebook) Decode(codes []int) (*image.RGBA, error) {
	if len(codes) != c.TokensPerImage() {
		return nil, fmt.Errorf("decode: %d codes, want %d", len(codes), c.TokensPerImage())
	}
	n := c.ImageSize()
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	side := c.PatchesPerSide()
	d := c.Dim()
	for t, code := range codes {
		if code < 0 || code >= c.k {
			return nil, fmt.Errorf("decode: code %d at position %d out of range [0,%d)", code, t, c.k)
		}
		v := c.data[code*d : (code+1)*d]
		x0, y0 := (t%side)*c.patch, (t/side)*c.patch
		i := 0
		for y := range c.patch {
			off := img.PixOffset(x0, y0+y)
			for range c.patch {
				img.Pix[off] = toByte(v[i])
				img.Pix[off+1] = toByte(v[i+1])
				img.Pix[off+2] = toByte(v[i+2])
				img.Pix[off+3] = 255
				i += Channels
				off += 4
			}
		}
	}
	return img, nil
}

func toByte(v float32) uint8 {
	return uint8(math.Round(math.Min(255, math.Max(0, float64(v)))))
}
