#!/usr/bin/env bash
# test.sh: the project's whole test suite, as CI runs it. Needs only Go: it installs the S3 test
# server (versitygw, into the git-ignored .tools/bin) when it is missing, and Chromium for the
# dashboard's browser tests (apt-get install chromium, where apt is available), then vets and tests every
# package (after checking that go.mod is tidy; and checks that the XLA backend build still compiles when a C compiler is present).
# Every fuzz target (func FuzzXxx in a _test.go file: the decoders of untrusted input) then runs for
# BICOT_FUZZTIME each (default 3000x, i.e. 3000 inputs: 0.5-5 s a target on 2 cores; 0 skips them).
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator can report its own
# deadline as a failure ("context deadline exceeded", no failing input) when the time runs out
# while a worker is busy. To fuzz one longer, e.g.
# go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 10m ./pkg/bus
# Extra arguments go to `go test` (e.g. scripts/test.sh -run Pipeline ./pkg/coordinator/...), and
# then the fuzz targets are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/s3server.sh install
export BICOT_VERSITYGW="${BICOT_VERSITYGW:-$(scripts/s3server.sh path)}"
# The dashboard's tests drive a headless Chromium: Debian's chromium package, installed with apt
# when missing (they skip, saying so, only where none can be found or installed).
scripts/chromium.sh install

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
# Each fuzz target briefly (`go test -fuzz` takes one target of one package at a time); go test
# below runs their seed corpora and testdata/fuzz regressions. Minimization is off: in a few
# seconds it would only take time from fuzzing, and a failing input is written to testdata either way.
fuzztime="${BICOT_FUZZTIME:-3000x}"
if [[ $# -eq 0 && "$fuzztime" != 0 ]]; then
	while IFS=: read -r file decl; do
		go test -run '^$' -fuzz "^${decl#func }\$" -fuzztime "$fuzztime" -fuzzminimizetime 0 -parallel 2 "./$(dirname "$file")"
	done < <(grep -rHo --include='*_test.go' --exclude-dir='.?*' '^func Fuzz[A-Za-z0-9_]*' . | sort)
fi
[[ $# -gt 0 ]] || (cd deploy && go mod tidy -diff && go vet ./... && go test -count=1 -timeout 10m ./...) # deployment files: a module of its own
if [[ $# -gt 0 ]]; then
	exec go test -count=1 -timeout 20m "$@"
fi
exec go test -count=1 -timeout 20m ./...
