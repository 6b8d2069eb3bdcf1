#!/usr/bin/env bash
# Proves `.ci/postgres` on a genuinely fresh Debian 12: a minbase root made with
# debootstrap, nothing installed but what debootstrap puts there. Not run by CI (it
# needs root, a Debian mirror and a few minutes); the result is in
# docs/fresh-debian-proof.md.
#
#   sudo bash .ci/prove-fresh-debian.sh [WORKDIR]      (default /tmp/wabot-fresh-debian)
#
# Two cases, each in its own copy of the root, each inside its own network namespace
# (so the root's PostgreSQL can use 127.0.0.1:5432 while the host's runs too):
#   1. fresh: no PostgreSQL. `.ci/postgres` installs it and the README's URL
#      `postgres://postgres@127.0.0.1:5432/postgres` logs in and creates a database;
#      a second run changes nothing.
#   2. configured before: PostgreSQL was installed by someone else. `.ci/postgres`
#      leaves pg_hba.conf byte for byte as it was and says the URL is refused.
# Packages are downloaded once with the network (`apt-get install --download-only`,
# which runs no package scripts); everything else runs without it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-/tmp/wabot-fresh-debian}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$work"

if [ ! -x "$work/base/bin/bash" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    debootstrap --variant=minbase bookworm "$work/base" "$mirror"
fi
# Warm the package cache (download only: no maintainer script runs, nothing binds).
if ! ls "$work/base/var/cache/apt/archives/"postgresql-1*.deb >/dev/null 2>&1; then
    chroot "$work/base" apt-get update -qq
    chroot "$work/base" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --download-only postgresql >/dev/null
fi

# (In the cases below, a negated check ends with `|| exit 1`: `set -e` ignores `!`.)

# Runs a command as root inside a copy of the root, with /proc and /dev, no network
# but loopback.
in_root() {
    local root="$1"
    shift
    unshare --net --mount --fork bash -euo pipefail -c '
        root="$1"; shift
        ip link set lo up
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mkdir -p "$root/wabot/.ci"
        cp "'"$here"'/.ci/postgres" "$root/wabot/.ci/postgres"
        status=0
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            bash -c "$*" || status=$?
        # Stop every cluster so the namespace ends with this call.
        chroot "$root" bash -c "command -v pg_lsclusters >/dev/null && pg_lsclusters -h | while read v c _; do pg_ctlcluster --skip-systemctl-redirect \$v \$c stop -m fast || true; done" || true
        exit $status
    ' in_root "$root" "$@"
}

fresh_copy() {
    rm -rf "$work/$1"
    cp -a "$work/base" "$work/$1"
    # The host's resolver and hostname are not needed offline; keep the root's own.
    echo "$work/$1"
}

pass=0
fail=0
check() {
    local name="$1"
    shift
    if "$@"; then
        echo "ok: $name"
        pass=$((pass + 1))
    else
        echo "FAILED: $name"
        fail=$((fail + 1))
    fi
}

url=postgres://postgres@127.0.0.1:5432/postgres

# 1. A fresh machine.
root=$(fresh_copy fresh)
check "fresh: .ci/postgres installs PostgreSQL and the README's URL logs in" in_root "$root" "
    set -e
    ! command -v psql || exit 1
    bash /wabot/.ci/postgres
    psql $url -qAtX -c 'CREATE DATABASE wabot_proof' && psql ${url%/postgres}/wabot_proof -qAtX -c 'SELECT current_user' | grep -qx postgres
    cp /etc/postgresql/*/main/pg_hba.conf /tmp/hba.first
    bash /wabot/.ci/postgres
    cmp /etc/postgresql/*/main/pg_hba.conf /tmp/hba.first
    [ \$(grep -c 'wabot .ci/postgres' /etc/postgresql/*/main/pg_hba.conf) = 1 ]
    # Only the postgres role and only the loopback address are trusted.
    ! grep -v '^#' /etc/postgresql/*/main/pg_hba.conf | grep trust | grep -v -E 'postgres +(127.0.0.1/32|::1/128) +trust' || exit 1
    echo '--- pg_hba.conf (non-comment lines) ---'; grep -v -e '^#' -e '^\$' /etc/postgresql/*/main/pg_hba.conf
"

# 2. A server configured before the script ran.
root=$(fresh_copy configured)
check "configured before: .ci/postgres refuses to touch it and says so" in_root "$root" "
    set -e
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    v=\$(ls /etc/postgresql)
    pg_ctlcluster --skip-systemctl-redirect \$v main start || true
    cp /etc/postgresql/\$v/main/pg_hba.conf /tmp/hba.before
    if bash /wabot/.ci/postgres 2>/tmp/err; then echo 'expected a refusal'; exit 1; fi
    cat /tmp/err
    grep -q 'is refused' /tmp/err
    cmp /etc/postgresql/\$v/main/pg_hba.conf /tmp/hba.before
    ! grep -q 'wabot .ci/postgres' /etc/postgresql/\$v/main/pg_hba.conf || exit 1
"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
