#!/usr/bin/env bash
# chromium.sh: the headless Chromium the dashboard's browser tests drive (chromedp;
# pkg/dashboard/browsertest). It is Debian's chromium package, installed with apt when missing.
#
#   scripts/chromium.sh install   install it when no Chromium is found and apt-get is there (as
#                                 root or with passwordless sudo); a failed install is an error.
#                                 Without apt, or without the rights to use it, it says so and the
#                                 browser tests skip.
#   scripts/chromium.sh path      print the Chromium the tests will use (exit 1 when none)
#
# Tests look for $BICOT_CHROMIUM, then chromium, chromium-browser, google-chrome,
# google-chrome-stable and headless-shell on PATH.
set -euo pipefail

find_bin() {
	if [[ -n "${BICOT_CHROMIUM:-}" && -x "${BICOT_CHROMIUM}" ]]; then
		echo "$BICOT_CHROMIUM"
		return 0
	fi
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable headless-shell; do
		if command -v "$name" >/dev/null 2>&1; then
			command -v "$name"
			return 0
		fi
	done
	return 1
}

install() {
	if b="$(find_bin)"; then
		echo "chromium present: $b" >&2
		return 0
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "chromium.sh: no Chromium and no apt-get: the dashboard's browser tests will skip (set BICOT_CHROMIUM to a Chromium to run them)" >&2
		return 0
	fi
	local sudo=()
	if [[ "$(id -u)" -ne 0 ]]; then
		if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
			sudo=(sudo -n)
		else
			echo "chromium.sh: no Chromium, and apt-get needs root: the dashboard's browser tests will skip (apt-get install -y chromium)" >&2
			return 0
		fi
	fi
	echo "installing chromium with apt-get (about a minute)..." >&2
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
	find_bin >/dev/null || { echo "chromium.sh: apt-get installed chromium but it is not on PATH" >&2; return 1; }
	echo "chromium installed: $(find_bin)" >&2
}

case "${1:-}" in
install) install ;;
path) find_bin ;;
*)
	echo "usage: $0 install|path" >&2
	exit 2
	;;
esac
