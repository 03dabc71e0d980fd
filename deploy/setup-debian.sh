#!/usr/bin/env bash
# Installs what VoiceMeter needs on Debian 12 that is not there yet: the C libraries it links
# (libpq, libwebsockets with its libev event-loop plugin, libev, OpenSSL), pkg-config, and a
# PostgreSQL server for the embedded default.
# Idempotent; runs apt-get only when something is missing. Swift 6 itself must already be installed.
set -euo pipefail

# chromium renders the finance dashboard in its test.
packages=(pkg-config libpq-dev libwebsockets-dev libwebsockets-evlib-ev libev-dev libssl-dev postgresql postgresql-contrib chromium)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
    echo "Installing: ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "swift is not on PATH: install the Swift 6 toolchain (swift.org) and add its usr/bin to PATH." >&2
    exit 1
fi
