#!/usr/bin/env sh
# The database tests start a real PostgreSQL server from the machine's binaries. Install Debian's
# server package where it is missing (needs root and apt-get); otherwise say why those tests skip.
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's postgresql (server binaries for the database tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } \
        || echo "could not install postgresql: the PostgreSQL tests will skip"
else
    echo "PostgreSQL server binaries not found and cannot install them here: the PostgreSQL tests will skip"
fi
