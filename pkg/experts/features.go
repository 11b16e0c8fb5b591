package experts

import (
	"image"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Geometry of the model inputs: the default scene canvas, 4x4 cells of 8x8 RGB pixels.
const (
	Grid      = 4
	CellSize  = 8
	NumCells  = Grid * Grid
	PatchDim  = CellSize * CellSize * 3
	ImageSide = Grid * CellSize
)

// cellPatches writes the image's cell patches into dst ([NumCells*PatchDim], cell-major, pixels in
// raster order within a cell) as ink intensities 1 - value/255, so that the white background is
// zero. Images of another size are resampled to the canvas by nearest neighbour.
func cellPatches(img image.Image, dst []float32) {
	rgba := scene.ToRGBA(img)
	b := rgba.Bounds()
	w, h := b.Dx(), b.Dy()
	for cy := 0; cy < Grid; cy++ {
		for cx := 0; cx < Grid; cx++ {
			base := (cy*Grid + cx) * PatchDim
			for y := 0; y < CellSize; y++ {
				for x := 0; x < CellSize; x++ {
					px, py := cx*CellSize+x, cy*CellSize+y
					if w != ImageSide || h != ImageSide {
						px, py = px*w/ImageSide, py*h/ImageSide
					}
					o := rgba.PixOffset(b.Min.X+px, b.Min.Y+py)
					k := base + (y*CellSize+x)*3
					dst[k] = 1 - float32(rgba.Pix[o])/255
					dst[k+1] = 1 - float32(rgba.Pix[o+1])/255
					dst[k+2] = 1 - float32(rgba.Pix[o+2])/255
				}
			}
		}
	}
}

// patchBatch returns the patches of imgs padded with blank images to n rows: [n*NumCells*PatchDim].
func patchBatch(imgs []image.Image, n int) []float32 {
	out := make([]float32, n*NumCells*PatchDim)
	for i, img := range imgs {
		cellPatches(img, out[i*NumCells*PatchDim:(i+1)*NumCells*PatchDim])
	}
	return out
}

// cellBox returns the box of cell c as fractions of the image side.
func cellBox(c int) [4]float64 {
	r, col := c/Grid, c%Grid
	return [4]float64{float64(col) / Grid, float64(r) / Grid, float64(col+1) / Grid, float64(r+1) / Grid}
}
