package scene

import (
	"errors"
	"fmt"
)

// Config fixes the canvas: Grid x Grid cells of Cell x Cell pixels.
type Config struct {
	Grid int `json:"grid" yaml:"grid"`
	Cell int `json:"cell" yaml:"cell"`
}

// DefaultConfig is a 32x32 canvas of 4x4 cells of 8 pixels.
func DefaultConfig() Config { return Config{Grid: 4, Cell: 8} }

// ImageSize is the canvas side in pixels.
func (c Config) ImageSize() int { return c.Grid * c.Cell }

// Cells is the number of grid cells.
func (c Config) Cells() int { return c.Grid * c.Grid }

// MaxObjects is the most objects a scene may hold.
const MaxObjects = 4

// Validate checks that the canvas can hold every shape distinguishably.
func (c Config) Validate() error {
	if c.Grid < 3 || c.Grid > 16 {
		return fmt.Errorf("scene config: grid %d out of range [3,16]", c.Grid)
	}
	if c.Cell < 8 || c.Cell > 64 {
		return fmt.Errorf("scene config: cell %d out of range [8,64]", c.Cell)
	}
	return nil
}

// Object is one thing on the canvas, in cell (Row, Col), row 0 at the top.
type Object struct {
	Shape   Shape   `json:"shape"`
	Colour  Colour  `json:"color"`
	Size    Size    `json:"size"`
	Texture Texture `json:"texture"`
	Row     int     `json:"row"`
	Col     int     `json:"col"`
}

func (o Object) String() string {
	return fmt.Sprintf("%s %s %s %s@(%d,%d)", o.Size, o.Colour, o.Texture, o.Shape, o.Row, o.Col)
}

// Scene is the full content of an image.
type Scene struct {
	Objects []Object `json:"objects"`
}

// Validate checks attribute values, bounds and that no two objects share a cell.
func (s Scene) Validate(c Config) error {
	if len(s.Objects) > MaxObjects {
		return fmt.Errorf("scene: %d objects, at most %d", len(s.Objects), MaxObjects)
	}
	seen := map[[2]int]bool{}
	for i, o := range s.Objects {
		var errs []error
		if !o.Shape.Valid() {
			errs = append(errs, fmt.Errorf("shape %q", o.Shape))
		}
		if !o.Colour.Valid() {
			errs = append(errs, fmt.Errorf("color %q", o.Colour))
		}
		if !o.Size.Valid() {
			errs = append(errs, fmt.Errorf("size %q", o.Size))
		}
		if !o.Texture.Valid() {
			errs = append(errs, fmt.Errorf("texture %q", o.Texture))
		}
		if o.Row < 0 || o.Row >= c.Grid || o.Col < 0 || o.Col >= c.Grid {
			errs = append(errs, fmt.Errorf("cell (%d,%d) outside %dx%d grid", o.Row, o.Col, c.Grid, c.Grid))
		}
		if seen[[2]int{o.Row, o.Col}] {
			errs = append(errs, fmt.Errorf("cell (%d,%d) already taken", o.Row, o.Col))
		}
		seen[[2]int{o.Row, o.Col}] = true
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("scene object %d: invalid %w", i, err)
		}
	}
	return nil
}
