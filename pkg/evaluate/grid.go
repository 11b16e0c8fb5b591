package evaluate

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// gridRows collects the grid's rows from the observed samples: the first perType prompts of each
// task type, each with all its samples. A nil *gridRows collects nothing.
type gridRows struct {
	perType int
	count   map[string]int
	rows    []gridRow
}

type gridRow struct {
	prompt string
	plans  []string
	images []image.Image
}

func (g *gridRows) add(s Sample) {
	if g == nil {
		return
	}
	if s.Index == 0 {
		if g.count[s.Prompt.TaskType] >= g.perType {
			return
		}
		g.count[s.Prompt.TaskType]++
		g.rows = append(g.rows, gridRow{prompt: s.Prompt.Prompt})
	} else if len(g.rows) == 0 || g.rows[len(g.rows)-1].prompt != s.Prompt.Prompt || len(g.rows[len(g.rows)-1].plans) != s.Index {
		return // this prompt has no row in the grid
	}
	row := &g.rows[len(g.rows)-1]
	row.plans, row.images = append(row.plans, s.Plan), append(row.images, s.Image)
}

const (
	gridScale = 3   // samples are tiny: drawn 3x to be seen
	gridTextW = 560 // room for a prompt and its plans on a few lines
	gridPad   = 6
)

// writeGrid draws one row per prompt: the prompt and each sample's plan on the left, the samples
// (scaled 3x) on the right.
func writeGrid(path string, rows []gridRow, cfg scene.Config) error {
	face := basicfont.Face7x13
	lineH := face.Metrics().Height.Ceil()
	side := cfg.ImageSize() * gridScale
	maxImgs := 0
	for _, r := range rows {
		maxImgs = max(maxImgs, len(r.images))
	}
	texts, heights, total := gridText(rows, side, lineH)
	width := gridTextW + maxImgs*(side+gridPad) + gridPad
	canvas := image.NewRGBA(image.Rect(0, 0, width, max(total, 1)))
	draw.Draw(canvas, canvas.Bounds(), image.NewUniform(color.RGBA{235, 235, 235, 255}), image.Point{}, draw.Src)
	y := 0
	for i, r := range rows {
		d := &font.Drawer{Dst: canvas, Src: image.NewUniform(color.Black), Face: face}
		for k, line := range texts[i] {
			d.Dot = fixed.P(gridPad, y+gridPad+(k+1)*lineH-3)
			d.DrawString(line)
		}
		for j, img := range r.images {
			drawScaled(canvas, img, gridTextW+j*(side+gridPad), y+gridPad, side)
		}
		y += heights[i]
		for xx := 0; xx < width; xx++ {
			canvas.Set(xx, y-1, color.Gray{180})
		}
	}
	return writePNG(path, canvas)
}

// gridText wraps each row's prompt and plans to the text column and returns the lines, each
// row's height (the taller of its text and its images) and the total height.
func gridText(rows []gridRow, side, lineH int) (texts [][]string, heights []int, total int) {
	charsPerLine := (gridTextW - 2*gridPad) / 7 // basicfont's glyphs are 7 pixels wide
	for _, r := range rows {
		lines := wrap("prompt: "+r.prompt, charsPerLine)
		for j, p := range r.plans {
			if p == "" {
				p = "(empty)"
			}
			lines = append(lines, wrap(fmt.Sprintf("plan %d: %s", j+1, p), charsPerLine)...)
		}
		h := max(side, len(lines)*lineH) + 2*gridPad
		heights, texts = append(heights, h), append(texts, lines)
		total += h
	}
	return texts, heights, total
}

// drawScaled draws img into canvas at (x0, y0), side pixels square, by nearest neighbour so the
// cells stay sharp.
func drawScaled(canvas *image.RGBA, img image.Image, x0, y0, side int) {
	b := img.Bounds()
	for yy := 0; yy < side; yy++ {
		for xx := 0; xx < side; xx++ {
			canvas.Set(x0+xx, y0+yy, img.At(b.Min.X+xx/gridScale, b.Min.Y+yy/gridScale))
		}
	}
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write grid: %w", err)
	}
	if err := scene.WritePNG(f, img); err != nil {
		f.Close()
		return fmt.Errorf("write grid %s: %w", path, err)
	}
	return f.Close()
}

// wrap breaks s into lines of at most n characters at spaces, indenting the continuations.
func wrap(s string, n int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > n {
			lines = append(lines, cur)
			cur = "  " + w
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	return append(lines, cur)
}
