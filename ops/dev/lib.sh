# shellcheck shell=bash
# Shared helpers for ops/dev/*; sourced, never executed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA_DIR="${CHAT4ALL_DATA_DIR:-$HOME/.local/share/chat4all}"
mkdir -p "$DATA_DIR"
# Absolute, because the broker runs from / (see ops/dev/up).
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
export ROOT DATA_DIR

# Defaults shared by the binary, the tests and the demo so they all talk to
# the services ops/dev/up manages.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/chat4all}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
export CHAT4ALL_LISTEN="${CHAT4ALL_LISTEN:-127.0.0.1:8080}"

die() { echo "error: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    # 9>&-: package scripts may start daemons, which must not inherit ops/dev/up's lock.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 9>&-
}

# rustup installs into ~/.cargo, which a non-login shell (CI) may not have on PATH.
load_cargo_env() {
    # shellcheck source=/dev/null
    if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH="$HOME/.cargo/bin:$PATH" ;; esac
    export PATH
}

# bash's /dev/tcp avoids depending on nc, which minimal images lack.
port_open() { (: <"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_until SECONDS CMD...: poll instead of sleeping a fixed time, so a fast
# start costs nothing and a slow one still gets its full allowance.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
