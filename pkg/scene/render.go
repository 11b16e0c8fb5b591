package scene

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
)

// Ink is what a pixel of an object template shows.
type Ink uint8

// Ink values: nothing (background), the object's base colour, or its darker shade.
const (
	InkNone Ink = iota
	InkBase
	InkShade
)

// Template returns the cell-sized ink pattern of an object with the given shape, size and texture,
// indexed [y][x]. Templates depend only on the cell size, so the oracle and the experts can
// precompute them. Large objects fill the cell; small ones fill its centre with a margin of an
// eighth of the cell on each side.
func Template(cell int, sh Shape, sz Size, tx Texture) [][]Ink {
	side, off := cell, 0
	if sz == Small {
		off = max(1, cell/8)
		side = cell - 2*off
	}
	mask := make([][]bool, side)
	for y := range mask {
		mask[y] = make([]bool, side)
		for x := range mask[y] {
			mask[y][x] = inside(sh, side, float64(x)+0.5, float64(y)+0.5)
		}
	}
	out := make([][]Ink, cell)
	for y := range out {
		out[y] = make([]Ink, cell)
	}
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			if !mask[y][x] {
				continue
			}
			ink := InkBase
			switch tx {
			case Striped:
				if y%2 == 1 {
					ink = InkShade
				}
			case Dotted:
				if x%2 == 1 && y%2 == 1 {
					ink = InkShade
				}
			case Outline:
				if !border(mask, x, y) {
					ink = InkNone
				}
			}
			out[y+off][x+off] = ink
		}
	}
	return out
}

// inside reports whether the point (x, y) of a side x side box lies in the shape.
func inside(sh Shape, side int, x, y float64) bool {
	s := float64(side)
	c := s / 2
	dx, dy := x-c, y-c
	switch sh {
	case Square:
		return true
	case Circle:
		return dx*dx+dy*dy <= c*c
	case Diamond:
		return math.Abs(dx)+math.Abs(dy) <= c
	case Triangle:
		// Apex at the top centre, base along the bottom edge.
		return math.Abs(dx) <= y/2
	case Cross:
		w := s / 6
		if w < 1 {
			w = 1
		}
		return math.Abs(dx) <= w || math.Abs(dy) <= w
	}
	return false
}

func border(mask [][]bool, x, y int) bool {
	n := len(mask)
	for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
		xx, yy := x+d[0], y+d[1]
		if xx < 0 || yy < 0 || xx >= n || yy >= n || !mask[yy][xx] {
			return true
		}
	}
	return false
}

// Render draws the scene on a white canvas. It is deterministic: the same scene and config always
// give the same pixels.
func Render(c Config, s Scene) (*image.RGBA, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := s.Validate(c); err != nil {
		return nil, err
	}
	n := c.ImageSize()
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	bg := color.RGBA{Background.R, Background.G, Background.B, 255}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			img.SetRGBA(x, y, bg)
		}
	}
	for _, o := range s.Objects {
		t := Template(c.Cell, o.Shape, o.Size, o.Texture)
		base, shade := o.Colour.Base(), o.Colour.Shade()
		for y, row := range t {
			for x, ink := range row {
				var v RGB
				switch ink {
				case InkBase:
					v = base
				case InkShade:
					v = shade
				default:
					continue
				}
				img.SetRGBA(o.Col*c.Cell+x, o.Row*c.Cell+y, color.RGBA{v.R, v.G, v.B, 255})
			}
		}
	}
	return img, nil
}

// WritePNG encodes an image as PNG.
func WritePNG(w io.Writer, img image.Image) error {
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode png: %w", err)
	}
	return nil
}

// PNG returns the PNG encoding of an image.
func PNG(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	if err := WritePNG(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ToRGBA converts any decoded image (for instance a PNG from a remote client) to RGBA.
func ToRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok {
		return r
	}
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			out.Set(x, y, img.At(b.Min.X+x, b.Min.Y+y))
		}
	}
	return out
}
