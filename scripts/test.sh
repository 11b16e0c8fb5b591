#!/usr/bin/env bash
# test.sh: the project's whole test suite, as CI runs it. Needs only Go: it installs the S3 test
# server (versitygw, into the git-ignored .tools/bin) when it is missing, then vets and tests every
# package. Extra arguments go to `go test` (e.g. scripts/test.sh -run Pipeline ./pkg/coord/...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/s3server.sh install
export BICOT_VERSITYGW="${BICOT_VERSITYGW:-$(scripts/s3server.sh path)}"

go vet ./...
if [[ $# -gt 0 ]]; then
	exec go test -count=1 -timeout 20m "$@"
fi
exec go test -count=1 -timeout 20m ./...
