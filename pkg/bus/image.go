package bus

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
)

// Codebook turns a sample's image tokens into pixels; *vq.Codebook is one. The bus names only
// this much of it, so that clients of the bus need not link the codebook's package.
type Codebook interface {
	// K is the number of codes.
	K() int
	// Decode renders one image's codes.
	Decode(codes []int) (*image.RGBA, error)
}

// MaxImageSide bounds the width and height of a sample's attached PNG. A PNG's header names its
// size and a decoder allocates the pixels for it before reading them, so a message of a few bytes
// could otherwise claim gigabytes; the header is checked first. 1024 is the largest canvas a scene
// config allows (grid 16 x cell 64).
const MaxImageSide = 1024

// Image returns the sample's image: its PNG when attached, else its image tokens decoded with cb.
func (s *Sample) Image(cb Codebook) (image.Image, error) {
	if len(s.PNG) > 0 {
		c, err := png.DecodeConfig(bytes.NewReader(s.PNG))
		if err != nil {
			return nil, fmt.Errorf("sample %s: png: %w", s.Key(), err)
		}
		if c.Width > MaxImageSide || c.Height > MaxImageSide {
			return nil, fmt.Errorf("sample %s: png is %dx%d pixels, larger than %dx%d", s.Key(), c.Width, c.Height, MaxImageSide, MaxImageSide)
		}
		img, err := png.Decode(bytes.NewReader(s.PNG))
		if err != nil {
			return nil, fmt.Errorf("sample %s: png: %w", s.Key(), err)
		}
		return img, nil
	}
	codes := make([]int, len(s.ImageTokens))
	for i, t := range s.ImageTokens {
		if t < 0 || int(t) >= cb.K() {
			return nil, fmt.Errorf("sample %s: image token %d = %d outside the codebook's %d codes", s.Key(), i, t, cb.K())
		}
		codes[i] = int(t)
	}
	img, err := cb.Decode(codes)
	if err != nil {
		return nil, fmt.Errorf("sample %s: %w", s.Key(), err)
	}
	return img, nil
}
