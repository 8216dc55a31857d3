#!/usr/bin/env bash
# scripts/bench/ssh-deploy.sh IMAGE HOST...
#
# The baseline for `cargo bench --bench hosts`: a blue-green deploy the way
# teams write it by hand — the system `ssh` client and the `docker` CLI on
# the host, host after host, the same steps as deploy-action:
#   lock → docker login + pull → read the live colour from the upstream file
#   → docker run the other colour → curl its /health until 3 in a row pass
#   → write the upstream file (ssh 'cat > tmp' + mv), nginx -t, nginx -s reload
#   → curl /version through nginx → observe /health through nginx
#   → drain, docker stop + rm the old colour → unlock.
# Containers carry deploy-action's labels so the action and this script read
# each other's state (the benchmark alternates them on the same hosts).
# No rollback beyond restoring the upstream file when nginx -t refuses it:
# like most hand-written scripts, a failure stops the script (set -e).
#
# HOST is user@addr. Settings from the environment (the stack's .stack/env
# has the first ones):
#   SSH_KEY SSH_KNOWN_HOSTS REGISTRY REGISTRY_USERNAME REGISTRY_PASSWORD
#   APP=app BLUE_PORT=8081 GREEN_PORT=8082 APP_PORT=8080
#   NGINX_UPSTREAM_FILE=/etc/nginx/conf.d/upstreams/<app>.conf
#   OBSERVE_SECS=1 DRAIN_SECS=1 HEALTH_TIMEOUT_SECS=20
#   SSH_MUX=1 to reuse one SSH connection per host (ControlMaster); by
#   default every command opens its own connection, as most scripts do.
# Prints `T <epoch ms> <host> <event>` lines (pull-start, pull-end,
# health-start, health-end, observe-start, observe-end, drain-start,
# drain-end, host-start, host-end) for the benchmark to subtract waits.
set -euo pipefail

IMAGE=${1:?usage: ssh-deploy.sh IMAGE HOST...}
shift
[ $# -gt 0 ] || { echo "usage: ssh-deploy.sh IMAGE HOST..." >&2; exit 2; }
APP=${APP:-app}
BLUE_PORT=${BLUE_PORT:-8081}
GREEN_PORT=${GREEN_PORT:-8082}
APP_PORT=${APP_PORT:-8080}
UPSTREAM=${NGINX_UPSTREAM_FILE:-/etc/nginx/conf.d/upstreams/$APP.conf}
OBSERVE_SECS=${OBSERVE_SECS:-1}
DRAIN_SECS=${DRAIN_SECS:-1}
HEALTH_TIMEOUT_SECS=${HEALTH_TIMEOUT_SECS:-20}
LOCK=/var/lib/deploy-action/locks/$APP.lock
MUX_DIR=$(mktemp -d /tmp/ssh-deploy.XXXXXX)
cleanup() {
    local sock
    for sock in "$MUX_DIR"/*; do
        [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit x 2>/dev/null
    done
    rm -rf "$MUX_DIR"
}
trap cleanup EXIT

ts() { date +%s%3N; }
mark() { echo "T $(ts) $HOST $1"; }

on() { # on CMD... : run CMD on $HOST
    local opts=(-i "$SSH_KEY" -o UserKnownHostsFile="$SSH_KNOWN_HOSTS" -o StrictHostKeyChecking=yes
        -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=20)
    if [ "${SSH_MUX:-0}" = 1 ]; then
        opts+=(-o ControlMaster=auto -o ControlPath="$MUX_DIR/%C" -o ControlPersist=60)
    fi
    # The remote shell joins and splits the words again, as with any `ssh host cmd`.
    # shellcheck disable=SC2029
    ssh "${opts[@]}" "$HOST" "$@"
}

for HOST in "$@"; do
    mark host-start
    on mkdir -p "$(dirname "$LOCK")"
    on mkdir "$LOCK" || { echo "$HOST: deploy lock $LOCK is held" >&2; exit 1; }

    mark pull-start
    printf '%s' "$REGISTRY_PASSWORD" | on docker login --username "$REGISTRY_USERNAME" --password-stdin "$REGISTRY" >/dev/null
    on docker pull -q "$IMAGE" >/dev/null
    mark pull-end

    upstream=$(on cat "$UPSTREAM")
    live_port=$(sed -n 's/^ *server 127\.0\.0\.1:\([0-9]*\).*/\1/p;T;q' <<<"$upstream")
    if [ "$live_port" = "$BLUE_PORT" ]; then
        old=blue new=green port=$GREEN_PORT
    else
        old=green new=blue port=$BLUE_PORT
    fi
    on docker rm -f "$APP-$new" >/dev/null 2>&1 || true
    on docker run -d --name "$APP-$new" --restart unless-stopped --init \
        -p "127.0.0.1:$port:$APP_PORT" \
        --label deploy-action.app="$APP" --label deploy-action.colour="$new" \
        --label deploy-action.image="$IMAGE" --label deploy-action.role=app \
        --label deploy-action.service= "$IMAGE" >/dev/null

    mark health-start
    ok=0
    deadline=$(($(date +%s) + HEALTH_TIMEOUT_SECS))
    while [ $ok -lt 3 ]; do
        if on curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/health"; then ok=$((ok + 1)); else ok=0; fi
        [ $ok -ge 3 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || { echo "$HOST: $APP-$new never became healthy" >&2; exit 1; }
        sleep 0.2
    done
    mark health-end
    want=$(on curl -fsS -m 2 "http://127.0.0.1:$port/version")

    previous=$(on cat "$UPSTREAM")
    printf 'upstream %s_backend {\n    server 127.0.0.1:%s;\n    keepalive 16;\n}\n' "$APP" "$port" |
        on "cat > $UPSTREAM.tmp && mv $UPSTREAM.tmp $UPSTREAM"
    if ! on nginx -t -q; then
        printf '%s\n' "$previous" | on "cat > $UPSTREAM"
        echo "$HOST: nginx refused the new upstream" >&2
        exit 1
    fi
    on nginx -s reload 2>/dev/null
    got=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        got=$(on curl -fsS -m 2 http://127.0.0.1/version || true)
        [ "$got" = "$want" ] && break
        sleep 0.2
    done
    [ "$got" = "$want" ] || { echo "$HOST: nginx serves '$got', not '$want'" >&2; exit 1; }

    mark observe-start
    end=$(($(ts) + OBSERVE_SECS * 1000))
    while [ "$(ts)" -lt "$end" ]; do
        on curl -fsS -m 2 -o /dev/null http://127.0.0.1/health
    done
    mark observe-end

    mark drain-start
    sleep "$DRAIN_SECS"
    mark drain-end
    on docker stop -t 10 "$APP-$old" >/dev/null 2>&1 || true
    on docker rm "$APP-$old" >/dev/null 2>&1 || true
    on rmdir "$LOCK"
    mark host-end
done
