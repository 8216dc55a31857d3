# shellcheck shell=bash
# Common definitions for scripts/stack/*. Sourced, never executed.

STACK_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$STACK_SCRIPTS/../.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"
export STACK_DIR
FIXTURES_APP="$REPO_ROOT/fixtures/app"
LOGS="$STACK_DIR/logs"
RUN="$STACK_DIR/run"
VENV="$STACK_DIR/venv"

# dockerd, sshd, ip, iptables live in sbin; keep the caller's order first so
# that e.g. a pyenv python3 still wins over /usr/bin/python3.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Our own docker calls always talk to the local engine of the namespace we
# are in (root engine in the root namespace, a host's engine inside a host).
export DOCKER_HOST=unix:///var/run/docker.sock
unset DOCKER_CONTEXT DOCKER_CONFIG DOCKER_TLS_VERIFY DOCKER_CERT_PATH

REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_USER=deploy
IMAGE_REPO=demo/app
IMAGE_TAGS="v1 v2 v3 broken"
# Bump when the way `up` assembles the images changes (forces a rebuild).
IMAGE_BUILD_REV=1
MOTO_PORT=5055
# The Instance Connect Endpoint (eice/server.py).
EICE_PORT=5057
# scripts/stack/prometheus: the server, and the file server of the metrics
# the tests write (off Prometheus's usual 9090/9091).
PROMETHEUS_PORT=19090
PROMETHEUS_METRICS_PORT=19091
# The AWS credentials of $STACK_DIR/env (moto takes any; the EKS token
# webhook of k8s/up knows only these).
AWS_TEST_ACCESS_KEY_ID=testing
AWS_TEST_SECRET_ACCESS_KEY=testing
# The EKS cluster moto describes (scripts/stack/moto-server.py): the control
# plane of scripts/stack/k8s/up (K8S_SERVER and the CA of k8s/lib.sh), whose
# apiserver takes this cluster's EKS tokens (k8s/eks-authenticator.py).
EKS_CLUSTER=deploy-action-test
EKS_REGION=us-east-1
EKS_ENDPOINT=https://127.0.0.1:16443
EKS_CA_FILE="$STACK_DIR/k8s/pki/ca.crt"
PY_PINS="moto[server]==5.2.5 openapi-core==0.23.1 awscli==1.46.3"
APT_PKGS="docker.io docker-registry apache2-utils nginx openssh-server busybox-static socat iproute2 wrk curl ca-certificates sudo prometheus"
MAX_HOSTS=8
# Paths that are private to every simulated host (bind-mounted from
# $STACK_DIR/hosts/hK/fs/<path> inside the host's mount namespace). /root
# too: a host's root starts with an empty home, as on a fresh server, so the
# dev machine's ~/.bashrc (which bash sources for every SSH command, and
# which here runs `pyenv init`, ~200 ms) does not slow every remote call.
HOST_PRIVATE_PATHS="/run /etc/nginx /etc/docker /var/lib/docker /var/lib/deploy-action /var/lib/nginx /var/log/nginx /root /tmp"
NGINX_UPSTREAM_FILE=/etc/nginx/conf.d/upstreams/app.conf
# The hosts' Instance Connect AuthorizedKeysCommand (scripts/stack/eice):
# sshd runs it only when it and every directory above it are root-owned
# and not writable by others, which a checkout (under /tmp, say) may not
# be; so it lives outside the clone, one copy per stack.
EICE_KEYS_CMD="/usr/local/libexec/deploy-action-stack/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)/eice-authorized-keys"
# The host prepared by the docs' host preparation script
# (docs/hosts/user-data.sh, run whole by host-services as on a real server:
# deploy user ec2-user with its key and sudo, sshd drop-in, nginx). What that
# script writes outside the private paths above is made private to this host
# too, so it never changes the machine: /etc/ssh (its sshd reads
# /etc/ssh/sshd_config, which refuses forwarding to all but root until the
# script's drop-in allows it to ec2-user), /etc/sudoers.d (no stack sudoers:
# only the script's) and /home (ec2-user's key only from the script). Every
# other host gets only the script's nginx step.
DOCS_HOST=5
DOCS_HOST_PRIVATE_PATHS="/etc/ssh /etc/sudoers.d /home"
DOCS_SCRIPT="$REPO_ROOT/docs/hosts/user-data.sh"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

host_ip() { echo "127.0.0.$(( $1 + 1 ))"; }
host_dir() { echo "$STACK_DIR/hosts/h$1"; }
host_ns() { echo "da-h$1"; }

# The private paths of host K.
host_private_paths() {
    if [ "$1" = "$DOCS_HOST" ]; then echo "$HOST_PRIVATE_PATHS $DOCS_HOST_PRIVATE_PATHS"; else echo "$HOST_PRIVATE_PATHS"; fi
}

# The sshd_config host K's sshd reads, as the root namespace sees it (the
# docs host's is in its private /etc/ssh, where the docs' script adds its
# drop-in).
host_sshd_config() {
    if [ "$1" = "$DOCS_HOST" ]; then echo "$(host_dir "$1")/fs/etc/ssh/sshd_config"; else echo "$(host_dir "$1")/ssh/sshd_config"; fi
}

# mount_private_paths K: inside host K's mount namespace, bind-mount each of
# its private paths from $STACK_DIR/hosts/hK/fs/<path> (at boot from
# host-init; from host-services for a path added since the host booted).
# Prints the paths it mounted.
mount_private_paths() {
    local k=$1 hd p src
    hd=$(host_dir "$k")
    for p in $(host_private_paths "$k"); do
        case "$STACK_DIR/" in
        "$p"/*)
            [ "$p" = /root ] || { log "h$k: NOT making $p private: STACK_DIR ($STACK_DIR) is below it"; continue; }
            # A checkout under /root: keep at least the Docker CLI's config private.
            p=/root/.docker
            ;;
        esac
        src="$hd/fs$p"
        mkdir -p "$src" "$p"
        mountpoint -q "$p" && [ "$(stat -c %d:%i "$p")" = "$(stat -c %d:%i "$src")" ] && continue
        mount --bind "$src" "$p"
        echo "$p"
    done
}

valid_host_num() {
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] && [ "$1" -le "$MAX_HOSTS" ]
}

# pid_alive PIDFILE [CMDLINE-SUBSTRING]: the process in PIDFILE exists (not a
# zombie) and, if given, its command line contains the substring.
pid_alive() {
    local f=$1 pat=${2:-} p cmd
    [ -s "$f" ] || return 1
    p=$(cat "$f" 2>/dev/null) || return 1
    p=${p//[[:space:]]/}
    [[ $p =~ ^[0-9]+$ ]] || return 1
    cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || return 1
    [ -n "$cmd" ] || return 1
    [ -z "$pat" ] || [[ $cmd == *"$pat"* ]]
}

# start_bg PIDFILE LOGFILE CMD...: start CMD detached (own session, stdin from
# /dev/null, output appended to LOGFILE, our lock fd closed) and record its pid.
# Returns once the child has exec'd CMD (or died): until then its command line
# is this script's, so a pid_alive PIDFILE PATTERN right after would say "dead"
# of a daemon that is only starting (seen in CI on a loaded machine: await then
# gave up on a kube-apiserver a few seconds old).
start_bg() {
    local pidf=$1 logf=$2 p self cmd i
    shift 2
    (
        close_fds
        exec setsid "$@" </dev/null >>"$logf" 2>&1
    ) &
    p=$!
    echo "$p" >"$pidf"
    self=$({ tr '\0' ' ' <"/proc/$$/cmdline"; } 2>/dev/null) || return 0
    for ((i = 0; i < 300; i++)); do
        cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || return 0
        [ -n "$cmd" ] && [ "$cmd" = "$self" ] || return 0
        sleep 0.02
    done
}

# close_fds: close every fd above 2 of the current (sub)shell, so that
# daemons never hold our lock or a caller's pipe (a test harness reading
# our output would otherwise wait for EOF forever).
close_fds() {
    local fd n
    for fd in /proc/$BASHPID/fd/*; do
        n=${fd##*/}
        [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt 2 ] || continue
        eval "exec $n>&-" 2>/dev/null || true
    done
}

# run_daemon LOGFILE CMD...: run a self-daemonizing CMD (nginx, sshd) in the
# foreground with clean fds; returns its exit status.
run_daemon() {
    local logf=$1
    shift
    (
        close_fds
        exec "$@" </dev/null >>"$logf" 2>&1
    )
}

# ensure_bg PIDFILE PATTERN LOGFILE CMD...: start_bg unless already running.
ensure_bg() {
    local pidf=$1 pat=$2
    shift 2
    pid_alive "$pidf" "$pat" && return 0
    start_bg "$pidf" "$@"
}

# stop_pidfile PIDFILE [PATTERN] [--group]: TERM the process (or its process
# group), wait up to 10 s, then KILL. Removes the pid file.
stop_pidfile() {
    local pidf=$1 pat=${2:-} grp=${3:-} p i target
    if pid_alive "$pidf" "$pat"; then
        p=$(cat "$pidf")
        target=$p
        [ "$grp" = --group ] && target=-$p
        kill -TERM -- "$target" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            pid_alive "$pidf" "$pat" || break
            sleep 0.1
        done
        if pid_alive "$pidf" "$pat"; then
            kill -KILL -- "$target" 2>/dev/null || true
        fi
    fi
    rm -f "$pidf"
}

docker_ping() { # SOCKET
    curl -sf --max-time 3 --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s.
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

# Serialise up/down/cut/restore (tests may call `up` from parallel processes).
take_lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    if ! flock -n 9; then
        log "waiting for another stack command to finish (lock $STACK_DIR/.lock)"
        flock 9
    fi
}

http_code() { # URL [curl args...]
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" 2>/dev/null || true
}

tcp_banner() { # IP PORT -> first bytes the server sends
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 4 <&3' _ "$1" "$2" 2>/dev/null || true
}

# --- root-namespace forwarders of host K -------------------------------
fwd_start_host() { # K
    local k=$1 ip hd
    ip=$(host_ip "$k")
    hd=$(host_dir "$k")
    mkdir -p "$RUN" "$LOGS"
    if ! pid_alive "$RUN/fwd-h$k-ssh.pid" "TCP-LISTEN:22,bind=$ip," ||
        ! pid_alive "$RUN/fwd-h$k-http.pid" "TCP-LISTEN:80,bind=$ip,"; then
        log "h$k: starting forwarders $ip:22, $ip:80"
    fi
    ensure_bg "$RUN/fwd-h$k-ssh.pid" "TCP-LISTEN:22,bind=$ip," "$LOGS/h$k-fwd.log" \
        socat "TCP-LISTEN:22,bind=$ip,reuseaddr,fork,backlog=128,nodelay" "UNIX-CONNECT:$hd/ssh.sock"
    ensure_bg "$RUN/fwd-h$k-http.pid" "TCP-LISTEN:80,bind=$ip," "$LOGS/h$k-fwd.log" \
        socat "TCP-LISTEN:80,bind=$ip,reuseaddr,fork,backlog=128,nodelay" "UNIX-CONNECT:$hd/http.sock"
}

fwd_stop_host() { # K [ssh|http|all]: kills listener and all forked connections
    local k=$1 which=${2:-all} ip
    ip=$(host_ip "$k")
    if [ "$which" != http ]; then stop_pidfile "$RUN/fwd-h$k-ssh.pid" "TCP-LISTEN:22,bind=$ip," --group; fi
    if [ "$which" != ssh ]; then stop_pidfile "$RUN/fwd-h$k-http.pid" "TCP-LISTEN:80,bind=$ip," --group; fi
}

drop_rules_clear() { # K: remove the iptables DROP rules of `cut-host --drop`
    local k=$1 ip
    ip=$(host_ip "$k")
    command -v iptables >/dev/null 2>&1 || return 0
    while iptables -w -D INPUT -p tcp -d "$ip" -m multiport --dports 22,80 -m comment --comment "da-cut-h$k" -j DROP 2>/dev/null; do :; done
    while iptables -w -D INPUT -p tcp -d "$ip" --dport 22 -m comment --comment "da-cut-h$k" -j DROP 2>/dev/null; do :; done
}

# pid (in the root pid namespace) of host K's init process, or fail.
host_init_pid() {
    local k=$1 hd
    hd=$(host_dir "$k")
    pid_alive "$hd/init.pid" "host-init" || return 1
    cat "$hd/init.pid"
}
