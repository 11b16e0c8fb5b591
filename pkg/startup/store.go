package startup

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/store/s3"
)

// OpenStore opens the run's object store: "s3://bucket/prefix?endpoint=..." through minio-go
// (credentials from the environment, see docs/control-plane.md), anything else as a local
// directory. The returned function releases it.
func OpenStore(ctx context.Context, spec string, log zerolog.Logger) (store.Store, func(), error) {
	if spec == "" {
		return nil, nil, fmt.Errorf("store: empty location")
	}
	if strings.HasPrefix(spec, "s3://") {
		cfg, err := s3.Parse(spec)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: %w", spec, err)
		}
		cfg.ApplyEnv(os.Getenv)
		st, err := s3.New(cfg, log)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: %w", spec, err)
		}
		if err := st.EnsureBucket(ctx); err != nil {
			st.Close()
			return nil, nil, fmt.Errorf("store %s: %w", spec, err)
		}
		return st, func() { st.Close() }, nil
	}
	st, err := local.New(spec)
	if err != nil {
		return nil, nil, err
	}
	return st, func() {}, nil
}
