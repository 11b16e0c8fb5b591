#!/usr/bin/env bash
# s3server.sh: the S3-compatible server (versitygw) used by the S3 store tests and for trying the
# S3 checkpoint path on one machine. It is installed from source into the repository-local,
# git-ignored .tools/bin; nothing of it is committed.
#
#   scripts/s3server.sh install            install versitygw into .tools/bin when missing (~2 min)
#   scripts/s3server.sh path               print the binary's path (installing it when missing)
#   scripts/s3server.sh run [DIR] [ADDR]   serve DIR (default .tools/s3data) on ADDR (default
#                                          127.0.0.1:7070) in the foreground; credentials come from
#                                          ROOT_ACCESS_KEY / ROOT_SECRET_KEY (defaults: bicot / bicotsecret)
#
# Tests find the binary themselves (BICOT_VERSITYGW, then PATH, then .tools/bin) and start their
# own server on a free loopback port.
set -euo pipefail

VERSION="v1.8.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
BIN="$BIN_DIR/versitygw"

find_bin() {
	if [[ -n "${BICOT_VERSITYGW:-}" && -x "${BICOT_VERSITYGW}" ]]; then
		echo "$BICOT_VERSITYGW"
	elif command -v versitygw >/dev/null 2>&1; then
		command -v versitygw
	elif [[ -x "$BIN" ]]; then
		echo "$BIN"
	else
		return 1
	fi
}

install() {
	if b="$(find_bin)"; then
		echo "versitygw present: $b" >&2
		return 0
	fi
	mkdir -p "$BIN_DIR"
	echo "installing versitygw $VERSION into $BIN_DIR (takes a few minutes)..." >&2
	# Outside the repository so the module's go.mod is not touched.
	(cd "${TMPDIR:-/tmp}" && GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSION")
	echo "installed $BIN" >&2
}

case "${1:-install}" in
install)
	install
	;;
path)
	install
	find_bin
	;;
run)
	install
	dir="${2:-$ROOT/.tools/s3data}"
	addr="${3:-127.0.0.1:7070}"
	mkdir -p "$dir"
	export ROOT_ACCESS_KEY="${ROOT_ACCESS_KEY:-bicot}"
	export ROOT_SECRET_KEY="${ROOT_SECRET_KEY:-bicotsecret}"
	echo "serving $dir on http://$addr (access key $ROOT_ACCESS_KEY)" >&2
	exec "$(find_bin)" --port "$addr" posix "$dir"
	;;
*)
	echo "usage: $0 [install|path|run [DIR] [ADDR]]" >&2
	exit 2
	;;
esac
