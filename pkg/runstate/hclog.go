package runstate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// newHCLogger routes raft's hclog output into zerolog: hclog writes one JSON object per line, which
// is re-emitted with zerolog's level, message and fields, so raft's lines look like ours.
func newHCLogger(log zerolog.Logger, name string) hclog.Logger {
	lvl := hclog.Info
	if log.GetLevel() <= zerolog.DebugLevel {
		lvl = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      lvl,
		JSONFormat: true,
		Output:     &hclogWriter{log: log},
	})
}

type hclogWriter struct {
	mu  sync.Mutex
	buf []byte
	log zerolog.Logger
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *hclogWriter) emit(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Info().Msg(string(line))
		return
	}
	var ev *zerolog.Event
	switch m["@level"] {
	case "trace":
		ev = w.log.Trace()
	case "debug":
		ev = w.log.Debug()
	case "warn":
		ev = w.log.Warn()
	case "error":
		ev = w.log.Error()
	default:
		ev = w.log.Info()
	}
	msg, _ := m["@message"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		if len(k) > 0 && k[0] != '@' {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		ev = ev.Str(k, fmt.Sprint(m[k]))
	}
	if mod, ok := m["@module"].(string); ok {
		ev = ev.Str("module", mod)
	}
	ev.Msg(msg)
}
