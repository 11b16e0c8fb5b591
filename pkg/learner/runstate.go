package learner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/secure"
)

// RunStateFromCluster returns a RunState function that reads the replicated run state from the
// coordinator cluster's leader (runstate.Client follows failovers by itself).
func RunStateFromCluster(cl *runstate.Client) func() ([]byte, error) {
	return func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		st, err := cl.State(ctx)
		if err != nil {
			return nil, fmt.Errorf("run state: %w", err)
		}
		var b bytes.Buffer
		if err := runstate.EncodeSnapshot(&b, st); err != nil {
			return nil, fmt.Errorf("run state: %w", err)
		}
		return b.Bytes(), nil
	}
}

// RunStateFrom returns a RunState function that reads the snapshot from a coordinator's status
// API (GET <url>/v1/runstate), with the API's bearer token and TLS when it has them.
func RunStateFrom(url, token string, files secure.TLSFiles) (func() ([]byte, error), error) {
	rt, _, err := secure.Transport(files, token)
	if err != nil {
		return nil, fmt.Errorf("run state from %s: %w", url, err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: rt}
	return func() ([]byte, error) {
		resp, err := hc.Get(strings.TrimRight(url, "/") + "/v1/runstate")
		if err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("run state from %s: %s", url, resp.Status)
		}
		if _, err := runstate.DecodeSnapshot(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		return b, nil
	}, nil
}
