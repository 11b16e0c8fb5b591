package reward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
)

// MaxImageSide bounds the width and height of a request's images. A PNG's header names its size
// and a decoder allocates the pixels for it before reading them, so a request of a few bytes could
// otherwise claim gigabytes; the header is checked first. 1024 is the largest canvas a scene config
// allows (grid 16 x cell 64).
const MaxImageSide = 1024

// HandlerOptions tune NewHandler.
type HandlerOptions struct {
	MaxBatch     int   // most items per request (default 64)
	MaxBodyBytes int64 // request size limit (default 64 MiB)
}

// NewHandler serves a backend over the expert protocol (docs/expert-protocol.md). The server
// validates its own backend's outputs before replying, so a faulty model yields a 500 with a
// message, never a reply the client would have to reject.
func NewHandler(name string, b Backend, o HandlerOptions) http.Handler {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 64
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
	h := &handler{name: name, b: b, o: o}
	mux := http.NewServeMux()
	mux.HandleFunc(PathInfo, h.info)
	mux.HandleFunc(PathInfer, h.infer)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no endpoint "+r.URL.Path)
	})
	return mux
}

type handler struct {
	name string
	b    Backend
	o    HandlerOptions
}

func (h *handler) info(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET")
		return
	}
	writeJSON(w, http.StatusOK, Info{Protocol: Protocol, Name: h.name, Output: h.b.Output(), MaxBatch: h.o.MaxBatch})
}

func (h *handler) infer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use POST")
		return
	}
	var req InferRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
	if err := dec.Decode(&req); err != nil {
		if _, ok := err.(*http.MaxBytesError); ok {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, err.Error())
			return
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "decode request: "+err.Error())
		return
	}
	if req.Protocol != Protocol {
		writeError(w, http.StatusBadRequest, CodeUnsupportedProtocol, fmt.Sprintf("protocol %q, this server speaks %q", req.Protocol, Protocol))
		return
	}
	if req.Output != h.b.Output() {
		writeError(w, http.StatusBadRequest, CodeWrongOutput, fmt.Sprintf("request wants %q, expert %q produces %q", req.Output, h.name, h.b.Output()))
		return
	}
	if len(req.Items) == 0 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "no items")
		return
	}
	if len(req.Items) > h.o.MaxBatch {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("%d items, max_batch is %d", len(req.Items), h.o.MaxBatch))
		return
	}
	qs := make([]Query, len(req.Items))
	for i, it := range req.Items {
		if len(it.ImagePNG) == 0 {
			writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("item %d: missing image_png", i))
			return
		}
		c, err := png.DecodeConfig(bytes.NewReader(it.ImagePNG))
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("item %d: decode png: %v", i, err))
			return
		}
		if c.Width > MaxImageSide || c.Height > MaxImageSide {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge,
				fmt.Sprintf("item %d: png is %dx%d pixels, larger than %dx%d", i, c.Width, c.Height, MaxImageSide, MaxImageSide))
			return
		}
		img, err := png.Decode(bytes.NewReader(it.ImagePNG))
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("item %d: decode png: %v", i, err))
			return
		}
		qs[i] = Query{Prompt: it.Prompt, Image: img, Questions: it.Questions}
		if h.b.Output() == OutputAnswers && len(it.Questions) == 0 {
			writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("item %d: no questions", i))
			return
		}
	}
	raws, err := h.b.Infer(r.Context(), qs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "infer: "+err.Error())
		return
	}
	if len(raws) != len(qs) {
		writeError(w, http.StatusInternalServerError, CodeInternal, fmt.Sprintf("model returned %d results for %d items", len(raws), len(qs)))
		return
	}
	resp := InferResponse{Protocol: Protocol, Results: make([]wireResult, len(raws))}
	for i, raw := range raws {
		if err := ValidateRaw(h.b.Output(), qs[i], raw); err != nil {
			writeError(w, http.StatusInternalServerError, CodeInternal, fmt.Sprintf("item %d: model output invalid: %v", i, err))
			return
		}
		resp.Results[i] = toWire(h.b.Output(), raw)
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}
