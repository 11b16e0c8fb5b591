package bus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/png"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/vq"
)

// fuzzTypes are the messages a run's subjects carry, in the order the first fuzz byte picks them,
// each with what its receiver does with a decoded copy.
var fuzzTypes = []struct {
	name  string
	check func(t *testing.T, body []byte)
}{
	{"task", func(t *testing.T, b []byte) { roundTrip(t, b, new(BatchTask)) }},
	{"sample", func(t *testing.T, b []byte) {
		if s, ok := roundTrip(t, b, new(Sample)); ok {
			_, _ = s.Key(), s.MsgID()
		}
	}},
	{"scored", func(t *testing.T, b []byte) {
		s, ok := roundTrip(t, b, new(ScoredSample))
		if !ok {
			return
		}
		// What the learner does with it: collect the group.
		c := NewCollector(s.Run)
		if _, _, err := c.Add(*s); err != nil {
			t.Fatalf("collector refuses a valid scored sample: %v", err)
		}
		c.Missing()
	}},
	{"policy", func(t *testing.T, b []byte) {
		if p, ok := roundTrip(t, b, new(PolicyAnnounce)); ok {
			_ = p.MsgID()
		}
	}},
	{"dead letter", func(t *testing.T, b []byte) { roundTrip(t, b, new(DeadLetter)) }},
	{"event", func(t *testing.T, b []byte) {
		e, ok := roundTrip(t, b, new(Event))
		if !ok {
			return
		}
		// The coordinator decodes the payloads of these kinds from the message.
		switch e.Kind {
		case EventStepDone:
			var rep StepReport
			_ = json.Unmarshal([]byte(e.Message), &rep)
		case EventStepResample:
			var rq ResampleRequest
			_ = json.Unmarshal([]byte(e.Message), &rq)
		}
	}},
	// Event payloads on their own, as the coordinator decodes them.
	{"step report", func(t *testing.T, b []byte) {
		var rep StepReport
		_ = json.Unmarshal(b, &rep)
	}},
	{"resample request", func(t *testing.T, b []byte) {
		var rq ResampleRequest
		_ = json.Unmarshal(b, &rq)
	}},
}

// roundTrip decodes body into m; a message Decode accepts must encode again and decode to an
// accepted message, so that whatever a worker took in it can also pass on.
func roundTrip[T any, PT interface {
	*T
	Message
}](t *testing.T, body []byte, m PT) (PT, bool) {
	if err := Decode(body, m); err != nil {
		return nil, false
	}
	out, err := Encode(m)
	if err != nil {
		t.Fatalf("%s accepted but not encodable: %v", m.MsgType(), err)
	}
	if err := Decode(out, PT(new(T))); err != nil {
		t.Fatalf("%s accepted, but its encoding is refused: %v\n%s", m.MsgType(), err, out)
	}
	return m, true
}

// FuzzDecode: bytes any NATS client can publish on a run's subjects, the first byte choosing the
// message type they are read as.
func FuzzDecode(f *testing.F) {
	tk := task(3, 0)
	tk.V = SchemaVersion
	s := sample(3, 1, 2)
	s.V = SchemaVersion
	s.Attempt = 1
	sc := ScoredSample{Sample: sample(3, 1, 2), Reward: 0.75, PerExpert: map[string]float64{"det": 0.5, "vqa": 1}, Scorer: "rw-0"}
	sc.V = SchemaVersion
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seeds := []Message{
		&tk,
		&s,
		&sc,
		&PolicyAnnounce{V: 1, Run: "run1", Version: 4, Step: 3, WeightsKey: "run1/weights/000004", SHA256: strings.Repeat("ab", 32), Time: at, Learner: "l-1", Repeat: 2},
		&DeadLetter{V: 1, Run: "run1", Stream: "SAMPLES_run1", Consumer: "reward", Subject: "run1.samples", Sequence: 9, Deliveries: 5,
			Error: "poison", Headers: map[string]string{"Bicot-Type": "sample"}, Data: []byte(`{"v":1}`), Time: at},
		&Event{V: 1, Run: "run1", Kind: EventStepDone, Worker: "learner-0", Role: RoleLearner, Step: 3, PolicyVersion: 4,
			Message: `{"learned":["3/0","3/1"],"metrics":{"loss":0.5}}`, Time: at, ID: "learner-0/3/step_done"},
	}
	for i, m := range seeds {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(i)}, b...))
		// Broken copies: cut short, and every number turned negative.
		f.Add(append([]byte{byte(i)}, b[:len(b)/2]...))
		f.Add(append([]byte{byte(i)}, bytes.ReplaceAll(b, []byte(`":`), []byte(`":-`))...))
	}
	f.Add(append([]byte{5}, `{"v":1,"run":"run1","kind":"step_resample","worker":"l","role":"learner","message":"{\"round\":1,\"dropped\":[\"3/0\"]}"}`...))
	f.Add(append([]byte{6}, `{"learned":["1/2"],"metrics":{"loss":1e308}}`...))
	f.Add(append([]byte{7}, `{"round":2,"dropped":["1/2","1/3"]}`...))
	f.Add(append([]byte{1}, `{"v":1,"run":"run1","g":4,"sample_index":1,"plan_tokens":[1],"plan_logp":[-1],"plan_len":1,"image_tokens":[1],"image_logp":[-81],"prompt":{"prompt":"x"}}`...))
	f.Add(append([]byte{2}, `{"v":1,"run":"run1","g":1,"image_tokens":[1],"image_logp":[0],"prompt":{"prompt":"x"},"reward":1e7}`...))
	f.Add([]byte{0})
	f.Add([]byte("\x01null"))
	f.Add(append([]byte{0}, `{"v":1,"run":"run1","g":1,"prompts":[{"index":0,"prompt":{"prompt":"p","task_type":"color"}}],"sampling":{"temperature":1,"cfg_weight":0,"image_logp":"bogus"}}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		typ := fuzzTypes[int(data[0])%len(fuzzTypes)]
		typ.check(t, data[1:])
	})
}

// FuzzSampleImage: a sample's attached PNG, or its image tokens, as a reward worker or the learner
// turns a sample taken off the bus into pixels (Sample.Image).
func FuzzSampleImage(f *testing.F) {
	cb, err := vq.Load("../../models/codebook.vq")
	if err != nil {
		f.Fatal(err)
	}
	good := make([]byte, 2*cb.TokensPerImage())
	for i := range cb.TokensPerImage() {
		binary.LittleEndian.PutUint16(good[2*i:], uint16(i%cb.K()))
	}
	var small bytes.Buffer
	if err := png.Encode(&small, image.NewRGBA(image.Rect(0, 0, 4, 3))); err != nil {
		f.Fatal(err)
	}
	f.Add(small.Bytes(), []byte(nil))
	f.Add(small.Bytes()[:small.Len()-20], []byte(nil))
	f.Add([]byte(nil), good)
	f.Add([]byte(nil), good[:len(good)-2])
	f.Add([]byte(nil), []byte{0xff, 0xff, 0, 0})
	f.Add(pngClaiming(small.Bytes(), 1<<14, 1<<14), []byte(nil))
	f.Fuzz(func(t *testing.T, pngData, tokens []byte) {
		s := sample(1, 0, 0)
		s.V = SchemaVersion
		s.PNG = pngData
		s.ImageTokens = make([]int32, len(tokens)/2)
		for i := range s.ImageTokens {
			s.ImageTokens[i] = int32(int16(binary.LittleEndian.Uint16(tokens[2*i:])))
		}
		var img image.Image
		var err error
		if n := allocated(func() { img, err = s.Image(cb) }); n > maxImageAlloc {
			t.Fatalf("decoding %d PNG bytes and %d tokens allocated %d bytes", len(pngData), len(s.ImageTokens), n)
		}
		if err == nil && img.Bounds().Empty() {
			t.Fatal("empty image without an error")
		}
	})
}

// maxImageAlloc is what decoding one image may allocate: an NRGBA64 image of MaxImageSide squared
// and the decoder's buffers.
const maxImageAlloc = 8*MaxImageSide*MaxImageSide + 8<<20

// allocated is the number of bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// pngClaiming rewrites a PNG's header (the IHDR chunk, which follows the 8-byte signature) to
// claim width x height, with a correct checksum: a few bytes that a decoder that trusts the header
// allocates width*height pixels for.
func pngClaiming(p []byte, width, height uint32) []byte {
	p = bytes.Clone(p)
	ihdr := p[8+4 : 8+4+4+13] // chunk type and data
	binary.BigEndian.PutUint32(ihdr[4:], width)
	binary.BigEndian.PutUint32(ihdr[8:], height)
	binary.BigEndian.PutUint32(p[8+4+4+13:], crc32.ChecksumIEEE(ihdr))
	return p
}
