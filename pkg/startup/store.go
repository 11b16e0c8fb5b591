package startup

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
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

// SplitRunTarget splits a run named by where it is stored into the store location and the run id:
// the last path element is the run, the rest the store ("s3://bucket/prefix/RUN?endpoint=..." or
// "runs/RUN"). `coordinator resume`, `coordinator dashboard` and `learner report` take such targets.
func SplitRunTarget(target string) (storeSpec, run string, err error) {
	if strings.HasPrefix(target, "s3://") {
		u, err := url.Parse(target)
		if err != nil {
			return "", "", fmt.Errorf("run target %q: %w", target, err)
		}
		p := strings.TrimSuffix(u.Path, "/")
		run = path.Base(p)
		u.Path = path.Dir(p)
		if u.Path == "/" || u.Path == "." {
			u.Path = ""
		}
		storeSpec = u.String()
	} else {
		clean := filepath.Clean(target)
		run, storeSpec = filepath.Base(clean), filepath.Dir(clean)
	}
	if run == "" || run == "." || run == "/" {
		return "", "", fmt.Errorf("run target %q: no run id at the end of the path", target)
	}
	return storeSpec, run, nil
}

// RunTarget is a run opened from a target SplitRunTarget accepts: its store (Close releases it),
// the store's location and the run id.
type RunTarget struct {
	Store     store.Store
	StoreSpec string
	Run       string
	Close     func()
}

// OpenRunTarget splits target (SplitRunTarget) and opens the run's store (OpenStore).
func OpenRunTarget(ctx context.Context, target string, log zerolog.Logger) (RunTarget, error) {
	storeSpec, run, err := SplitRunTarget(target)
	if err != nil {
		return RunTarget{}, err
	}
	st, closeStore, err := OpenStore(ctx, storeSpec, log)
	if err != nil {
		return RunTarget{}, err
	}
	return RunTarget{Store: st, StoreSpec: storeSpec, Run: run, Close: closeStore}, nil
}
