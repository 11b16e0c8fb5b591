package vq

import (
	"bytes"
	"errors"
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/scene"
)

const shipped = "../../models/codebook.vq"

func TestShippedCodebookIsTheDefaultTraining(t *testing.T) {
	cb, err := LoadFor(shipped, scene.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cb.K() != DefaultK || cb.TokensPerImage() != 16 || cb.Patch() != DefaultPatch || cb.Seed() != 1 {
		t.Fatalf("shipped codebook: k %d tokens %d patch %d seed %d", cb.K(), cb.TokensPerImage(), cb.Patch(), cb.Seed())
	}
	fresh, st, err := Train(scene.DefaultConfig(), DefaultTrainOptions(1))
	if err != nil {
		t.Fatal(err)
	}
	if fresh.SHA256() != cb.SHA256() {
		t.Fatalf("retraining with seed 1 gives %s, shipped file is %s: rebuild it with the documented command", fresh.SHA256(), cb.SHA256())
	}
	if st.Distinct != DefaultK || st.K != DefaultK {
		t.Fatalf("default training saw %d distinct patches, kept %d codes; want %d", st.Distinct, st.K, DefaultK)
	}
	held, err := HeldOutScenes(scene.DefaultConfig(), 300, 7)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Evaluate(cb, held)
	if err != nil {
		t.Fatal(err)
	}
	if ev.MSE != 0 || ev.Exact != 1 {
		t.Fatalf("default codebook round trip: mse %g exact %g, want 0 and 1", ev.MSE, ev.Exact)
	}
}

func TestEncodeRasterOrder(t *testing.T) {
	cb, err := Load(shipped)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cb.Config()
	empty, _ := scene.Render(cfg, scene.Scene{})
	bg, err := cb.Encode(empty)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range bg {
		if c != bg[0] {
			t.Fatalf("empty canvas: code %d at %d differs from %d", c, i, bg[0])
		}
	}
	sc := scene.Scene{Objects: []scene.Object{{Shape: scene.Cross, Colour: scene.Blue, Size: scene.Small, Texture: scene.Dotted, Row: 2, Col: 1}}}
	img, _ := scene.Render(cfg, sc)
	codes, err := cb.Encode(img)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range codes {
		if (c != bg[0]) != (i == 2*cfg.Grid+1) {
			t.Fatalf("object in cell (2,1) but code %d at position %d", c, i)
		}
	}
	// The same picture inside a larger canvas (a sub-image with an offset origin), and with slightly
	// perturbed pixels (no patch is exactly a code: the nearest-vector search), encodes the same.
	n := cb.ImageSize()
	big := image.NewRGBA(image.Rect(0, 0, 2*n, 2*n))
	noisy := image.NewRGBA(img.Bounds())
	for y := range n {
		for x := range n {
			big.SetRGBA(x+5, y+7, img.RGBAAt(x, y))
			c := img.RGBAAt(x, y)
			c.R = uint8(int(c.R) + 3 - 6*int(c.R/255))
			noisy.SetRGBA(x, y, c)
		}
	}
	for name, im := range map[string]image.Image{"offset": big.SubImage(image.Rect(5, 7, 5+n, 7+n)), "noisy": noisy} {
		got, err := cb.Encode(im)
		if err != nil {
			t.Fatal(err)
		}
		for i := range codes {
			if got[i] != codes[i] {
				t.Fatalf("%s image: code %d at %d, want %d", name, got[i], i, codes[i])
			}
		}
	}
}

func TestTrainingDeterministicAndCapsK(t *testing.T) {
	cfg := scene.DefaultConfig()
	opt := TrainOptions{K: 40, Patch: 8, Seed: 3, Scenes: 300, Iters: 20}
	a, sa, err := Train(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := Train(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256() != b.SHA256() {
		t.Fatal("same seed, different codebooks")
	}
	if a.K() != 40 || sa.MSE <= 0 {
		t.Fatalf("k 40: got k %d train mse %g", a.K(), sa.MSE)
	}
	big, sb, err := Train(cfg, TrainOptions{K: 5000, Patch: 8, Seed: 3, Scenes: 10, Iters: 20})
	if err != nil {
		t.Fatal(err)
	}
	if big.K() != sb.Distinct || sb.Distinct != DefaultK || sb.RequestedK != 5000 || sb.MSE != 0 {
		t.Fatalf("k 5000: kept %d codes for %d distinct patches, mse %g", big.K(), sb.Distinct, sb.MSE)
	}
}

func TestLargeGridSmallPatches(t *testing.T) {
	// The reference's sequence length: 24x24 patches of 4 px on a 6x6 grid of 16 px cells.
	cfg := scene.Config{Grid: 6, Cell: 16}
	cb, st, err := Train(cfg, TrainOptions{K: 1 << 20, Patch: 4, Seed: 1, Scenes: 80, Iters: 5})
	if err != nil {
		t.Fatal(err)
	}
	if cb.TokensPerImage() != 576 || cb.K() != st.Distinct {
		t.Fatalf("tokens %d k %d distinct %d", cb.TokensPerImage(), cb.K(), st.Distinct)
	}
	held, _ := HeldOutScenes(cfg, 4, 1)
	ev, err := Evaluate(cb, held)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Exact != 1 {
		t.Fatalf("one code per distinct patch must round-trip exactly, got %+v", ev)
	}
	if _, _, err := Train(scene.Config{Grid: 4, Cell: 12}, TrainOptions{K: 8, Patch: 5, Seed: 1, Scenes: 1, Iters: 1}); err == nil {
		t.Fatal("patch 5 accepted for cell 12")
	}
	if _, _, err := Train(cfg, TrainOptions{K: 0, Patch: 4, Seed: 1, Scenes: 1, Iters: 1}); err == nil {
		t.Fatal("k 0 accepted")
	}
}

func TestEncodeDecodeErrors(t *testing.T) {
	cb, err := Load(shipped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Encode(image.NewRGBA(image.Rect(0, 0, 48, 48))); err == nil || !strings.Contains(err.Error(), "48x48") {
		t.Fatalf("48x48 image: %v", err)
	}
	if _, err := cb.Encode(nil); err == nil {
		t.Fatal("nil image accepted")
	}
	if _, err := cb.Decode(make([]int, 15)); err == nil {
		t.Fatal("15 codes accepted")
	}
	codes := make([]int, 16)
	codes[3] = cb.K()
	if _, err := cb.Decode(codes); err == nil {
		t.Fatal("code K accepted")
	}
	codes[3] = -1
	if _, err := cb.Decode(codes); err == nil {
		t.Fatal("code -1 accepted")
	}
	if _, err := cb.Vector(cb.K()); err == nil {
		t.Fatal("vector K accepted")
	}
	// Any in-range codes decode; re-encoding a decoded image gives the codes back because each code's
	// vector is its own nearest.
	rng := rand.New(rand.NewPCG(5, 5))
	for range 20 {
		for i := range codes {
			codes[i] = rng.IntN(cb.K())
		}
		img, err := cb.Decode(codes)
		if err != nil {
			t.Fatal(err)
		}
		back, err := cb.Encode(img)
		if err != nil {
			t.Fatal(err)
		}
		for i := range codes {
			if back[i] != codes[i] {
				t.Fatalf("decode then encode: position %d %d -> %d", i, codes[i], back[i])
			}
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	cb, _, err := Train(scene.Config{Grid: 4, Cell: 12}, TrainOptions{K: 30, Patch: 4, Seed: 9, Scenes: 50, Iters: 10})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "cb.vq")
	if err := cb.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA256() != cb.SHA256() || got.K() != 30 || got.Patch() != 4 || got.Config() != cb.Config() || got.Seed() != 9 {
		t.Fatalf("loaded codebook differs: k %d patch %d cfg %+v", got.K(), got.Patch(), got.Config())
	}
	for k := range cb.K() {
		a, _ := cb.Vector(k)
		b, _ := got.Vector(k)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("code %d value %d: %v != %v", k, i, a[i], b[i])
			}
		}
	}
	if _, err := LoadFor(path, scene.DefaultConfig()); err == nil || !strings.Contains(err.Error(), "48x48") {
		t.Fatalf("codebook for 48x48 images loaded for 32x32: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.vq")); err == nil {
		t.Fatal("missing file loaded")
	}
}

func TestCorruptFilesRejected(t *testing.T) {
	good, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	headerLen := bytes.IndexByte(good, '\n') + 1
	// Every byte of the header, and a spread of data bytes, flipped one at a time.
	var positions []int
	for i := range headerLen {
		positions = append(positions, i)
	}
	for i := headerLen; i < len(good); i += 97 {
		positions = append(positions, i)
	}
	positions = append(positions, len(good)-1)
	for _, pos := range positions {
		bad := bytes.Clone(good)
		bad[pos] ^= 0x20
		_, err := Read(bytes.NewReader(bad))
		if err == nil {
			t.Fatalf("flipped byte %d accepted", pos)
		}
		if pos >= headerLen && !errors.Is(err, ErrChecksum) {
			t.Fatalf("flipped data byte %d: %v, want a checksum error", pos, err)
		}
	}
	for _, n := range []int{0, 10, headerLen - 1, headerLen, headerLen + 5, len(good) - 1} {
		_, err := Read(bytes.NewReader(good[:n]))
		if err == nil {
			t.Fatalf("file truncated to %d bytes accepted", n)
		}
		if n > headerLen && !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := Read(bytes.NewReader(append(bytes.Clone(good), 0))); err == nil {
		t.Fatal("trailing byte accepted")
	}
	if _, err := Read(strings.NewReader(strings.Repeat("x", maxHeader+10))); err == nil {
		t.Fatal("header without newline accepted")
	}
	// A header whose image size disagrees with its grid is refused before the data is read.
	wrongSize := bytes.Replace(good, []byte(`"image_size":32`), []byte(`"image_size":48`), 1)
	if _, err := Read(bytes.NewReader(wrongSize)); err == nil || !strings.Contains(err.Error(), "image size 48") {
		t.Fatalf("image_size 48 on a 4x8 grid: %v", err)
	}
}

func BenchmarkEncodeDefault(b *testing.B) {
	cb, err := Load(shipped)
	if err != nil {
		b.Fatal(err)
	}
	held, _ := HeldOutScenes(cb.Config(), 1, 1)
	img, _ := scene.Render(cb.Config(), held[0])
	b.ResetTimer()
	for b.Loop() {
		if _, err := cb.Encode(img); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzRead feeds arbitrary bytes to the file reader: it must return a codebook or an error, never
// panic, and whatever it accepts must write back to the same bytes.
func FuzzRead(f *testing.F) {
	good, err := os.ReadFile(shipped)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:300])
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"format":"bicot-vq","version":1,"grid":4,"cell":8,"image_size":32,"patch":8,"channels":3,"k":0}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cb, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := cb.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("accepted file does not write back identically")
		}
	})
}
