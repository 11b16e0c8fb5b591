//go:build xla

package mlx

// Building with `-tags xla` (cgo required) adds the XLA backend, for GPU nodes:
//
//	CGO_ENABLED=1 go build -tags xla ./learner ./rollout-worker
//	export PJRT_PLUGIN_LIBRARY_PATH=/usr/local/lib/go-xla   # where the PJRT CUDA plugin lives
//	export GOMLX_NO_AUTO_INSTALL=1                          # never download plugins at run time
//	export BICOT_BACKEND=xla:cuda                           # or pass --backend xla:cuda
//
// The matrix-multiply gradient workaround in this package stays in use on XLA: it is exact and
// costs nothing there.
import _ "github.com/gomlx/gomlx/backends/xla"
