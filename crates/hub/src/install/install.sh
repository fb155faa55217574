#!/bin/sh
# Install a Muster agent and enroll this machine with the hub that served this
# script (SPEC §10). Usage, as root:
#   sh -s -- --token met_... [--name NAME] [--label k=v]... [--force]
#
# Everything below is a function and the last line calls main: a download cut
# short defines some functions at most and runs nothing. The hub's CA certificate
# is written into this script by the hub; every later request is checked against
# it (or, when it is empty, against the system's trusted CAs).
#
# MUSTER_ROOT (default: empty, meaning /) installs under another root; tests use
# it for a fake root, and then root rights are not needed.

HUB_URL='@HUB_URL@'
CA_PEM='@CA_PEM@'

say() {
    printf 'muster-install: %s\n' "$*"
}

die() {
    printf 'muster-install: error: %s\n' "$*" >&2
    cleanup
    exit 1
}

cleanup() {
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        rm -rf "$WORK"
    fi
}

usage() {
    cat <<USAGE
usage: sh -s -- --token TOKEN [--name NAME] [--label k=v]... [--force]
  --token TOKEN   enrollment token (met_...) from 'muster tokens create'
  --name NAME     agent name (default: the hostname)
  --label k=v     label for this agent; repeatable
  --force         enroll as a new agent even if this machine is enrolled
USAGE
}

parse_args() {
    TOKEN=''
    NAME=''
    LABELS=''
    FORCE=''
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --token) [ "$#" -ge 2 ] || die "--token needs a value"; TOKEN=$2; shift 2 ;;
            --token=*) TOKEN=${1#--token=}; shift ;;
            --name) [ "$#" -ge 2 ] || die "--name needs a value"; NAME=$2; shift 2 ;;
            --name=*) NAME=${1#--name=}; shift ;;
            --label) [ "$#" -ge 2 ] || die "--label needs a value"; add_label "$2"; shift 2 ;;
            --label=*) add_label "${1#--label=}"; shift ;;
            --force) FORCE=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    [ -n "$TOKEN" ] || { usage >&2; die "--token is required"; }
}

add_label() {
    case "$1" in
        *=*) ;;
        *) die "--label takes k=v, not: $1" ;;
    esac
    # One label per line; a label holding a newline is refused by the hub anyway.
    LABELS="${LABELS}${1}
"
}

check_root() {
    ROOT=${MUSTER_ROOT:-}
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "this installs a system service and must run as root: prefix the command with sudo"
    fi
    BIN_DIR="$ROOT/usr/local/bin"
    BINARY="$BIN_DIR/muster"
    CONFIG_DIR="$ROOT/var/lib/muster-agent"
    PID_FILE="$ROOT/var/lib/muster-agent.pid"
    LOG_FILE="$ROOT/var/log/muster-agent.log"
}

detect_platform() {
    case "$(uname -s)" in
        Linux) OS=linux ;;
        Darwin) OS=macos ;;
        FreeBSD) OS=freebsd ;;
        NetBSD) OS=netbsd ;;
        OpenBSD) OS=openbsd ;;
        SunOS) OS=illumos ;;
        *) die "unsupported operating system: $(uname -s)" ;;
    esac
    machine=$(uname -m)
    if [ "$OS" = illumos ] && command -v isainfo >/dev/null 2>&1; then
        machine=$(isainfo -n)
    fi
    case "$machine" in
        x86_64|amd64) ARCH=x86_64 ;;
        aarch64|arm64) ARCH=arm64 ;;
        armv7*|armhf) ARCH=armv7 ;;
        i386|i486|i586|i686|i86pc) ARCH=i686 ;;
        riscv64) ARCH=riscv64 ;;
        *) die "unsupported architecture: $machine" ;;
    esac
    say "platform: $OS/$ARCH"
}

# Pick the tools before anything is fetched, so a missing one stops us early.
pick_tools() {
    if command -v curl >/dev/null 2>&1; then
        FETCH=curl
    elif command -v wget >/dev/null 2>&1 && wget --help 2>&1 | grep -q -- '--ca-certificate'; then
        FETCH=wget
    else
        die "needs curl, or a wget that checks certificates (GNU wget); install one and re-run"
    fi
    if command -v sha256sum >/dev/null 2>&1; then
        SHA=sha256sum
    elif command -v shasum >/dev/null 2>&1; then
        SHA=shasum
    elif command -v digest >/dev/null 2>&1; then
        SHA=digest
    elif command -v sha256 >/dev/null 2>&1; then
        SHA=sha256
    else
        die "no SHA-256 tool (sha256sum, shasum, digest or sha256): cannot check the download, so nothing was installed"
    fi
    say "tools: $FETCH, $SHA"
}

make_workdir() {
    umask 077
    WORK=$(mktemp -d 2>/dev/null || mktemp -d -t muster) || die "cannot make a temporary directory"
    CA_FILE=''
    if [ -n "$CA_PEM" ]; then
        CA_FILE="$WORK/hub-ca.pem"
        printf '%s\n' "$CA_PEM" >"$CA_FILE" || die "cannot write $CA_FILE"
    fi
    # What is installed (directories, the binary) is for everyone to read.
    umask 022
}

# fetch URL FILE: download over a connection checked against the hub's CA.
fetch() {
    case "$1" in
        "$HUB_URL"/*) ;;
        *) die "refusing to fetch from outside the hub: $1" ;;
    esac
    # A busy hub answers 429/503 with Retry-After (per-source and in-flight download
    # limits): wait as told and try again rather than fail a whole rollout.
    if [ "$FETCH" = curl ]; then
        if [ -n "$CA_FILE" ]; then
            curl -fsS --proto '=https' --retry 6 --retry-max-time 600 --cacert "$CA_FILE" -o "$2" "$1"
        else
            curl -fsS --proto '=https' --retry 6 --retry-max-time 600 -o "$2" "$1"
        fi
    else
        if [ -n "$CA_FILE" ]; then
            wget -q --https-only --tries=6 --retry-on-http-error=429,503 --ca-certificate="$CA_FILE" -O "$2" "$1"
        else
            wget -q --https-only --tries=6 --retry-on-http-error=429,503 -O "$2" "$1"
        fi
    fi
}

sha256_of() {
    case "$SHA" in
        sha256sum) sha256sum "$1" | cut -d ' ' -f 1 ;;
        shasum) shasum -a 256 "$1" | cut -d ' ' -f 1 ;;
        digest) digest -a sha256 "$1" ;;
        sha256) sha256 -q "$1" ;;
    esac
}

# json_field NAME FILE: a string or number field of the hub's one-line answer.
json_field() {
    sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" "$2" | head -n 1
}

find_release() {
    fetch "$HUB_URL/api/v1/agent/latest?os=$OS&arch=$ARCH" "$WORK/latest.json" ||
        die "cannot ask the hub for the agent binary for $OS/$ARCH"
    VERSION=$(json_field version "$WORK/latest.json")
    SHA256=$(json_field sha256 "$WORK/latest.json")
    URL=$(json_field url "$WORK/latest.json")
    case "$VERSION" in
        ''|*[!0-9A-Za-z.+-]*) die "the hub's answer has no usable version" ;;
    esac
    case "$SHA256" in
        ''|*[!0-9a-f]*) die "the hub's answer has no usable SHA-256" ;;
    esac
    [ "${#SHA256}" -eq 64 ] || die "the hub's answer has no usable SHA-256"
    say "hub offers muster $VERSION (sha256 $SHA256)"
}

install_binary() {
    if [ -f "$BINARY" ] && [ "$(sha256_of "$BINARY")" = "$SHA256" ]; then
        say "muster $VERSION is already installed at $BINARY"
        return 0
    fi
    fetch "$URL" "$WORK/muster" || die "download failed; nothing was installed"
    actual=$(sha256_of "$WORK/muster")
    if [ "$actual" != "$SHA256" ]; then
        die "SHA-256 mismatch: expected $SHA256, got $actual; nothing was installed"
    fi
    say "downloaded and checked $(wc -c <"$WORK/muster" | tr -d ' ') bytes"
    mkdir -p "$BIN_DIR" || die "cannot create $BIN_DIR"
    # Copied beside its final place, then renamed over it: never half a binary.
    staged="$BIN_DIR/.muster.new.$$"
    if ! { cp "$WORK/muster" "$staged" && chmod 755 "$staged" && mv -f "$staged" "$BINARY"; }; then
        rm -f "$staged"
        die "cannot install $BINARY"
    fi
    say "installed $BINARY"
}

# A running agent must not keep old credentials across a re-enrollment.
stop_agent() {
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ] &&
        systemctl is-active --quiet muster-agent.service 2>/dev/null; then
        systemctl stop muster-agent.service && say "stopped the running agent service"
    fi
    if [ -f "$PID_FILE" ]; then
        pid=$(cat "$PID_FILE")
        case "$pid" in
            ''|*[!0-9]*) ;;
            *)
                # A pid reused by another program since is left alone (Linux can tell).
                if [ -r "/proc/$pid/cmdline" ] && ! tr '\000' ' ' <"/proc/$pid/cmdline" | grep -q muster; then
                    :
                elif kill -0 "$pid" 2>/dev/null; then
                    kill "$pid" 2>/dev/null
                    n=0
                    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 50 ]; do
                        sleep 0.2
                        n=$((n + 1))
                    done
                    say "stopped the background agent (pid $pid)"
                fi
                ;;
        esac
        rm -f "$PID_FILE"
    fi
}

enroll() {
    set -- enroll --hub "$HUB_URL" --config-dir "$CONFIG_DIR"
    if [ -n "$NAME" ]; then
        set -- "$@" --name "$NAME"
    fi
    if [ -n "$FORCE" ]; then
        set -- "$@" --force
    fi
    old_ifs=$IFS
    IFS='
'
    for label in $LABELS; do
        set -- "$@" --label "$label"
    done
    IFS=$old_ifs
    # The token goes by the environment, not the command line others can read.
    MUSTER_ENROLL_TOKEN=$TOKEN "$BINARY" "$@" >"$WORK/enroll.out" 2>&1 || {
        cat "$WORK/enroll.out" >&2
        die "enrollment failed (see above)"
    }
    say "enrolled ($(head -n 1 "$WORK/enroll.out"))"
}

# Service manager present and in charge: it runs the agent. Otherwise (no
# systemd as PID 1, a container, a fake root) the agent runs in the background.
start_agent() {
    set -- --init auto
    if [ -n "$ROOT" ]; then
        set -- "$@" --root "$ROOT" --config-dir /var/lib/muster-agent --binary /usr/local/bin/muster
    else
        set -- "$@" --config-dir "$CONFIG_DIR" --binary "$BINARY"
    fi
    managed=''
    if "$BINARY" agent install-service "$@" >"$WORK/service.out" 2>&1; then
        say "installed the agent service"
        if [ -z "$ROOT" ] && service_manager_runs; then
            managed=1
        fi
    else
        say "could not install a service: $(head -n 1 "$WORK/service.out")"
    fi
    if [ -n "$managed" ]; then
        say "the service manager runs the agent"
        return 0
    fi
    mkdir -p "$(dirname "$LOG_FILE")" || die "cannot create $(dirname "$LOG_FILE")"
    (umask 077 && : >>"$LOG_FILE") || die "cannot write $LOG_FILE"
    nohup "$BINARY" agent --config-dir "$CONFIG_DIR" >>"$LOG_FILE" 2>&1 </dev/null &
    echo "$!" >"$PID_FILE"
    say "started the agent in the background (pid $!, log $LOG_FILE); it will not survive a reboot"
}

service_manager_runs() {
    case "$OS" in
        linux) [ -d /run/systemd/system ] ;;
        *) return 0 ;;
    esac
}

wait_online() {
    n=0
    while [ "$n" -lt 60 ]; do
        if "$BINARY" status --json --config-dir "$CONFIG_DIR" >"$WORK/status.json" 2>/dev/null &&
            grep -q '"status": *"online"' "$WORK/status.json"; then
            name=$(sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p' "$WORK/status.json" | head -n 1)
            id=$(sed -n 's/^ *"agent_id": *"\([^"]*\)".*/\1/p' "$WORK/status.json" | head -n 1)
            say "online: $name ($id)"
            return 0
        fi
        sleep 1
        n=$((n + 1))
    done
    die "the agent did not come online within 60 s; see $LOG_FILE or 'muster status --config-dir $CONFIG_DIR'"
}

main() {
    parse_args "$@"
    check_root
    detect_platform
    pick_tools
    make_workdir
    find_release
    install_binary
    stop_agent
    enroll
    start_agent
    wait_online
    cleanup
}

main "$@"
