#!/usr/bin/env sh
# The report test opens the report in a real headless Chromium. Install Debian's chromium where it is
# missing (needs root and apt-get); otherwise say why that test skips.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium (headless browser for the report test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
        || echo "could not install chromium: the browser test will skip"
else
    echo "Chromium not found and cannot install it here: the browser test will skip"
fi
