package prompts

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"
)

// FuzzRead: a prompt file (JSONL), as the coordinator, the learner and the CLI load it from a path
// the run config names.
func FuzzRead(f *testing.F) {
	fh, err := os.Open("../../data/prompts/train.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	// The first line of each task type the file holds.
	seen := map[string]bool{}
	sc := bufio.NewScanner(fh)
	var lines [][]byte
	for sc.Scan() {
		ps, err := Read(bytes.NewReader(sc.Bytes()), "seed")
		if err != nil || len(ps) != 1 || seen[ps[0].TaskType] {
			continue
		}
		seen[ps[0].TaskType] = true
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		f.Fatal(err)
	}
	if len(lines) < 2 {
		f.Fatalf("%d seed lines from the training prompts", len(lines))
	}
	for _, l := range lines {
		f.Add(l)
	}
	f.Add(append(append(bytes.Clone(lines[0]), "\r\n\n  \n"...), lines[1]...))
	f.Add(append([]byte("\xef\xbb\xbf"), lines[0]...))
	f.Add(lines[0][:len(lines[0])/2])
	f.Add([]byte(`{"prompt":"a red circle","task_type":"color","extra":{"k":[1,2]},"nouns":["circle"]}`))
	f.Add([]byte(`{"prompt":"two squares","task_type":"numeracy","numeracy_info":[{"obj_name":"square","num":0}]}`))
	f.Add([]byte(`{"prompt":"x","task_type":"spatial","spatial_info":{"obj1":"a","obj2":"","locality":"left"}}`))
	f.Add([]byte(`{"prompt":"x","task_type":"color","spec":{"objects":[{"shape":"blob","count":-1}]}}`))
	f.Add([]byte(`{"prompt":"x","task_type":"color","nouns":"circle"}`))
	f.Add([]byte("[]\nnull\n"))
	f.Add([]byte(strings.Repeat("{", 100)))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Read(bytes.NewReader(data), "fuzz.jsonl")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.jsonl:") {
				t.Fatalf("error %q does not name the file and line", err)
			}
			return
		}
		// What Read accepts, Write writes and Read takes back unchanged.
		var buf bytes.Buffer
		if err := Write(&buf, ps); err != nil {
			t.Fatalf("accepted prompts do not write: %v", err)
		}
		back, err := Read(&buf, "rewritten")
		if err != nil {
			t.Fatalf("rewritten prompts are refused: %v\n%s", err, buf.Bytes())
		}
		if len(back) != len(ps) {
			t.Fatalf("%d prompts read back, %d written", len(back), len(ps))
		}
	})
}
