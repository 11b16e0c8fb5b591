#!/usr/bin/env bash
# test.sh: the project's whole test suite, as CI runs it. Needs only Go: it installs the S3 test
# server (versitygw, into the git-ignored .tools/bin) when it is missing, then vets and tests every
# package (after checking that go.mod is tidy; and checks that the XLA backend build still compiles when a C compiler is present).
# Extra arguments go to `go test` (e.g. scripts/test.sh -run Pipeline ./pkg/coordinator/...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/s3server.sh install
export BICOT_VERSITYGW="${BICOT_VERSITYGW:-$(scripts/s3server.sh path)}"

# go.mod and go.sum must be what `go mod tidy` makes of the imports (it prints the difference).
go mod tidy -diff
go vet ./...
# The XLA backend (GPU nodes) is compiled in with -tags xla, which needs cgo; keep it building
# wherever a C compiler is present (running it needs a PJRT plugin, i.e. a GPU node).
if command -v "${CC:-gcc}" >/dev/null 2>&1; then
	CGO_ENABLED=1 go vet -tags xla ./pkg/mlx ./pkg/model ./learner
	GOMLX_NO_AUTO_INSTALL=1 CGO_ENABLED=1 go test -tags xla -count=1 -run XLA ./pkg/model
else
	echo "test.sh: no C compiler, skipping the -tags xla build check" >&2
fi
if [[ $# -gt 0 ]]; then
	exec go test -count=1 -timeout 20m "$@"
fi
exec go test -count=1 -timeout 20m ./...
