#!/usr/bin/env sh
# Some tests use real programs (a PostgreSQL server, a headless Chromium). Where none of the named
# programs is present, install the Debian package (needs root and apt-get); otherwise say why
# those tests skip.
# Usage: ensure-debian-package.sh PACKAGE "WHAT IT IS FOR" PROGRAM_OR_PATH...
package=$1; purpose=$2; shift 2
for candidate in "$@"; do
    if command -v "$candidate" >/dev/null 2>&1 || ls $candidate >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $package ($purpose)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$package" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$package" >/dev/null; } \
        || echo "could not install $package: the tests that need it will skip"
else
    echo "$package not found and cannot install it here: the tests that need it will skip"
fi
