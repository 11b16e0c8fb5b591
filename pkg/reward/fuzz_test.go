package reward

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

var fuzzOutputs = []Output{OutputScore, OutputAnswers, OutputBoxes}

// FuzzRemoteReply: what a remote expert server answers to GET /v1/info and POST /v1/infer (any
// status, any body), as the reward workers' RemoteBackend reads it.
func FuzzRemoteReply(f *testing.F) {
	type reply struct {
		status int
		body   []byte
	}
	var current atomic.Pointer[reply]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp := current.Load()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rp.status)
		w.Write(rp.body)
	}))
	tr := &http.Transport{}
	f.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	backends := make([]*RemoteBackend, len(fuzzOutputs))
	for i, out := range fuzzOutputs {
		b, err := NewRemoteBackend(RemoteConfig{URL: srv.URL, Output: out, MaxBatch: 2, Timeout: 5 * time.Second, Retries: -1,
			Client: &http.Client{Transport: tr}})
		if err != nil {
			f.Fatal(err)
		}
		backends[i] = b
	}
	qs := queries(2)
	for i := range qs {
		qs[i].Questions = []string{"a red circle?", "one circle?"}
	}

	score, half := 0.5, 0.5
	replies := []any{
		InferResponse{Protocol: Protocol, Results: []wireResult{{Score: &score}, {Score: &half}}},
		InferResponse{Protocol: Protocol, Results: []wireResult{
			{Answers: &[]Answer{{Yes: 0.9, No: 0.1}, {Yes: 0.2, No: 0.3}}}, {Answers: &[]Answer{{Yes: 1}, {No: 1}}}}},
		InferResponse{Protocol: Protocol, Results: []wireResult{
			{Boxes: &[]Box{{Label: "circle", Score: 0.8, Box: [4]float64{0.1, 0.2, 0.5, 0.6}}}}, {Boxes: &[]Box{}}}},
	}
	for i, r := range replies {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), uint16(200), b)
		f.Add(uint8(i), uint16(200), b[:len(b)-4])
		f.Add(uint8(i+1), uint16(200), b)
	}
	info, _ := json.Marshal(Info{Protocol: Protocol, Name: "hps", Output: OutputScore, MaxBatch: 8})
	f.Add(uint8(0), uint16(200), info)
	eb, _ := json.Marshal(ErrorBody{Error: ErrorDetail{Code: CodeTooLarge, Message: "2 items, max_batch is 1"}})
	f.Add(uint8(0), uint16(413), eb)
	f.Add(uint8(1), uint16(503), []byte("upstream down"))
	f.Add(uint8(2), uint16(200), []byte(`{"protocol":"bicot-expert/1","results":[{"boxes":[{"label":"x","score":2,"box":[0,0,1,1]}]},{"boxes":null}]}`))
	f.Add(uint8(0), uint16(200), []byte(`{"protocol":"bicot-expert/1","results":[{"score":1e400},{"score":-0}]}`))
	f.Fuzz(func(t *testing.T, kind uint8, status uint16, body []byte) {
		if status < 200 || status > 599 {
			status = 200
		}
		current.Store(&reply{status: int(status), body: body})
		b := backends[int(kind)%len(backends)]
		ctx := context.Background()
		_, _ = b.Info(ctx)
		raws, err := b.Infer(ctx, qs)
		if err != nil {
			return
		}
		if len(raws) != len(qs) {
			t.Fatalf("%d results for %d queries", len(raws), len(qs))
		}
		for i, r := range raws {
			if err := ValidateRaw(b.Output(), qs[i], r); err != nil {
				t.Fatalf("result %d passed on although invalid: %v", i, err)
			}
		}
	})
}

// maxRequestAlloc is what handling one request may allocate besides a few times its size: the
// decoded images (at most MaxImageSide squared, 8 bytes a pixel, for each item) and buffers.
const maxRequestAlloc = 4*8*MaxImageSide*MaxImageSide + 16<<20

// allocated is the number of bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// pngClaiming rewrites a PNG's header (the IHDR chunk, which follows the 8-byte signature) to
// claim width x height, with a correct checksum.
func pngClaiming(p []byte, width, height uint32) []byte {
	p = bytes.Clone(p)
	ihdr := p[8+4 : 8+4+4+13]
	binary.BigEndian.PutUint32(ihdr[4:], width)
	binary.BigEndian.PutUint32(ihdr[8:], height)
	binary.BigEndian.PutUint32(p[8+4+4+13:], crc32.ChecksumIEEE(ihdr))
	return p
}

// FuzzHandlerRequest: a POST /v1/infer body, as anyone who can reach an expert server sends it.
func FuzzHandlerRequest(f *testing.F) {
	answers := &funcBackend{out: OutputAnswers, f: func(_ context.Context, qs []Query) ([]Raw, error) {
		out := make([]Raw, len(qs))
		for i, q := range qs {
			out[i].Answers = make([]Answer, len(q.Questions))
			for j := range q.Questions {
				out[i].Answers[j] = Answer{Yes: 0.5, No: 0.5}
			}
		}
		return out, nil
	}}
	boxes := &funcBackend{out: OutputBoxes, f: func(_ context.Context, qs []Query) ([]Raw, error) {
		out := make([]Raw, len(qs))
		for i, q := range qs {
			b := q.Image.Bounds()
			out[i].Boxes = []Box{{Label: "image", Score: 1, Box: [4]float64{0, 0, float64(min(1, b.Dx())), float64(min(1, b.Dy()))}}}
		}
		return out, nil
	}}
	handlers := []http.Handler{
		NewHandler("score", pixelScore(), HandlerOptions{MaxBatch: 4}),
		NewHandler("answers", answers, HandlerOptions{MaxBatch: 4}),
		NewHandler("boxes", boxes, HandlerOptions{MaxBatch: 4, MaxBodyBytes: 1 << 20}),
	}
	var small bytes.Buffer
	if err := png.Encode(&small, image.NewRGBA(image.Rect(0, 0, 4, 4))); err != nil {
		f.Fatal(err)
	}
	p := prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color}
	for i, out := range fuzzOutputs {
		req := InferRequest{Protocol: Protocol, Output: out, Items: []InferItem{{ImagePNG: small.Bytes(), Prompt: p, Questions: []string{"a red circle?"}}}}
		b, err := json.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
		f.Add(uint8(i), b[:len(b)/2])
	}
	bomb := base64.StdEncoding.EncodeToString(pngClaiming(small.Bytes(), 1<<14, 1<<14))
	f.Add(uint8(0), []byte(`{"protocol":"bicot-expert/1","output":"score","items":[{"image_png":"`+bomb+`","prompt":{"prompt":"x"}}]}`))
	f.Add(uint8(1), []byte(`{"protocol":"bicot-expert/1","output":"answers","items":[{"image_png":"AAAA","prompt":{"prompt":"x"}}]}`))
	f.Add(uint8(2), []byte(`{"protocol":"bicot-expert/1","output":"boxes","items":[]}`))
	f.Add(uint8(0), []byte(`{"protocol":"bicot-expert/9","output":"score","items":[{}]}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		h := handlers[int(which)%len(handlers)]
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, PathInfer, bytes.NewReader(body))
		if n := allocated(func() { h.ServeHTTP(rec, req) }); n > maxRequestAlloc+8*uint64(len(body)) {
			t.Fatalf("a request of %d bytes allocated %d bytes", len(body), n)
		}
		switch rec.Code / 100 {
		case 2:
			var resp InferResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Protocol != Protocol {
				t.Fatalf("200 reply is not an infer response: %v\n%s", err, rec.Body.Bytes())
			}
		case 4:
			var eb ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("%d reply is not an error body: %v\n%s", rec.Code, err, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d for a request: %s", rec.Code, rec.Body.Bytes())
		}
	})
}
