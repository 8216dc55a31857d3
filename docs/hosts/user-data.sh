#!/bin/sh
# Prepares a server for deploy-action (docs/hosts.md): Docker Engine and nginx,
# the deploy user with passwordless sudo and its SSH key, sshd forwarding for
# that user, nginx's `deploy_action` log format, and the app's nginx server with
# a placeholder upstream (so `nginx -t` passes before the first deploy).
#
#   EC2:            paste this file, edited below, as the instance's user data;
#                   cloud-init runs it as root on the first boot.
#   Any server:     sudo sh user-data.sh
#   One step only:  sudo sh user-data.sh nginx      (steps: packages user sshd nginx)
#   Another app on the same host, on its own port (its workflow sets
#   proxy-url: http://127.0.0.1:8080/):  sudo env APP=shop HTTP_PORT=8080 sh user-data.sh nginx
#
# Safe to run again: it writes only what differs (saying so), and reloads sshd
# and nginx only when their files changed. The variables below can also be
# given in the environment (`sudo env APP=shop DEPLOY_USER=ubuntu sh user-data.sh`).
set -eu

# --- Edit these ---------------------------------------------------------------
# The workflow's `app` input (which defaults to the repository's name).
APP=${APP:-app}
# The workflow's `ssh-user`. Empty: ec2-user (Amazon Linux) or ubuntu (Ubuntu),
# whichever exists. `root` needs no sudo (and sshd must let root log in).
DEPLOY_USER=${DEPLOY_USER:-}
# The public half of the `ssh-private-key` secret (one authorized_keys line,
# "ssh-ed25519 AAAA... deploy"), added to the user's ~/.ssh/authorized_keys.
# Empty: leave that file alone (on EC2 it holds the instance's key pair).
DEPLOY_PUBLIC_KEY=${DEPLOY_PUBLIC_KEY:-}
# The workflow's `blue-port`: where nginx points until the first deploy.
BLUE_PORT=${BLUE_PORT:-8081}
# Where nginx listens for the app; the workflow's `proxy-url` (default
# http://127.0.0.1:80/) must point here.
HTTP_PORT=${HTTP_PORT:-80}
# ------------------------------------------------------------------------------

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

say() { printf 'deploy-action host prep: %s\n' "$*"; }
die() {
    say "ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (sudo sh $0)"
case $APP in
'' | *[!A-Za-z0-9_-]*) die "APP must be letters, digits, '-' or '_' (the workflow's app input), not '$APP'" ;;
esac

systemd_running() { [ -d /run/systemd/system ]; }

# put FILE MODE: writes stdin to FILE (atomically, by rename) when its content
# differs; succeeds when it wrote, fails when FILE already had that content.
put() {
    put_tmp=$(mktemp "$1.XXXXXX")
    cat >"$put_tmp"
    if [ -f "$1" ] && cmp -s "$put_tmp" "$1"; then
        rm -f "$put_tmp"
        return 1
    fi
    chmod "$2" "$put_tmp"
    mv -f "$put_tmp" "$1"
    say "wrote $1"
}

# The deploy user: DEPLOY_USER, else the image's default user.
resolve_user() {
    if [ -z "$DEPLOY_USER" ]; then
        for u in ec2-user ubuntu; do
            if id "$u" >/dev/null 2>&1; then
                DEPLOY_USER=$u
                break
            fi
        done
        [ -n "$DEPLOY_USER" ] || die "no ec2-user or ubuntu user here: set DEPLOY_USER at the top of $0"
    fi
}

# --- packages: Docker Engine, nginx, flock, sudo ------------------------------
step_packages() {
    missing=""
    for c in docker nginx flock sudo; do
        command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
    done
    if [ -z "$missing" ]; then
        say "packages: docker, nginx, flock and sudo are installed"
    elif command -v apt-get >/dev/null 2>&1; then
        pkgs=""
        for c in $missing; do
            case $c in
            docker) pkgs="$pkgs docker.io" ;;
            flock) pkgs="$pkgs util-linux" ;;
            *) pkgs="$pkgs $c" ;;
            esac
        done
        say "installing$pkgs (apt-get)"
        apt-get update -q
        # shellcheck disable=SC2086 # one word a package
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs
    elif command -v dnf >/dev/null 2>&1; then
        pkgs=""
        for c in $missing; do
            case $c in
            flock) pkgs="$pkgs util-linux" ;;
            *) pkgs="$pkgs $c" ;;
            esac
        done
        say "installing$pkgs (dnf)"
        # shellcheck disable=SC2086 # one word a package
        dnf install -y -q $pkgs
    else
        die "no apt-get or dnf: install$missing yourself, then run this again"
    fi
    if systemd_running; then
        systemctl enable --now docker >/dev/null 2>&1 || systemctl enable --now docker
    fi
    # Docker Engine 20.10 (Engine API 1.41) or later.
    if v=$(docker version --format '{{.Server.Version}}' 2>/dev/null); then
        major=${v%%.*}
        minor=${v#*.}
        minor=${minor%%.*}
        if [ "$major" -lt 20 ] || { [ "$major" = 20 ] && [ "$minor" -lt 10 ]; }; then
            die "Docker Engine $v is too old: deploy-action needs 20.10 or later"
        fi
        say "Docker Engine $v"
    else
        say "WARNING: the Docker Engine does not answer on /var/run/docker.sock (start it: systemctl start docker)"
    fi
}

# --- user: the deploy user, its key, passwordless sudo -------------------------
step_user() {
    resolve_user
    if ! id "$DEPLOY_USER" >/dev/null 2>&1; then
        shell=/bin/sh
        [ ! -x /bin/bash ] || shell=/bin/bash
        useradd -m -s "$shell" "$DEPLOY_USER"
        say "created user $DEPLOY_USER"
    fi
    home=$(getent passwd "$DEPLOY_USER" | cut -d: -f6)
    group=$(id -gn "$DEPLOY_USER")
    if [ -n "$DEPLOY_PUBLIC_KEY" ]; then
        if [ ! -d "$home/.ssh" ]; then
            mkdir -p "$home/.ssh"
            chmod 700 "$home/.ssh"
            chown "$DEPLOY_USER:$group" "$home" "$home/.ssh"
        fi
        keys=$home/.ssh/authorized_keys
        if ! grep -qxF "$DEPLOY_PUBLIC_KEY" "$keys" 2>/dev/null; then
            printf '%s\n' "$DEPLOY_PUBLIC_KEY" >>"$keys"
            chmod 600 "$keys"
            chown "$DEPLOY_USER:$group" "$keys"
            say "added the deploy key to $keys"
        fi
    fi
    if [ "$DEPLOY_USER" = root ]; then
        say "user: root (no sudo needed)"
        return 0
    fi
    # The switch, the lock directory and (unless the user is in the docker
    # group) the Docker Engine run through `sudo -n`.
    mkdir -p /etc/sudoers.d
    sudo_tmp=$(mktemp)
    printf '# deploy-action (docs/hosts.md)\n%s ALL=(root) NOPASSWD: ALL\n' "$DEPLOY_USER" >"$sudo_tmp"
    visudo -cqf "$sudo_tmp" >/dev/null || die "visudo refuses the sudoers line for $DEPLOY_USER"
    put /etc/sudoers.d/deploy-action 0440 <"$sudo_tmp" || true
    rm -f "$sudo_tmp"
    say "user: $DEPLOY_USER, passwordless sudo"
}

# --- sshd: TCP and Unix-socket forwarding for the deploy user -------------------
step_sshd() {
    resolve_user
    conf=/etc/ssh/sshd_config
    [ -f "$conf" ] || die "no $conf: is openssh-server installed?"
    block="# BEGIN deploy-action (docs/hosts.md): health checks and the proof through nginx
# are direct-tcpip channels to 127.0.0.1; the Docker Engine API is a
# direct-streamlocal channel to its socket.
Match User $DEPLOY_USER
    AllowTcpForwarding yes
    AllowStreamLocalForwarding yes
# END deploy-action"
    saved=$(mktemp)
    if grep -Eqi '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' "$conf"; then
        # Included first: its Match block applies before sshd_config's own lines.
        file=/etc/ssh/sshd_config.d/10-deploy-action.conf
    else
        # No drop-in directory: the block goes at the end of sshd_config, where a
        # Match block belongs.
        file=$conf
    fi
    [ ! -f "$file" ] || cp -p "$file" "$saved"
    if [ "$file" = "$conf" ]; then
        { sed '/^# BEGIN deploy-action/,/^# END deploy-action/d' "$conf" && printf '%s\n' "$block"; } >"$saved.new"
    else
        printf '%s\n' "$block" >"$saved.new"
    fi
    if put "$file" 0644 <"$saved.new"; then
        if ! sshd -t; then
            if [ -s "$saved" ]; then cp -p "$saved" "$file"; else rm -f "$file"; fi
            rm -f "$saved" "$saved.new"
            die "sshd -t refused the new configuration; $file put back"
        fi
        if systemd_running; then
            for unit in ssh.service sshd.service; do
                systemctl try-reload-or-restart "$unit" 2>/dev/null || true
            done
            say "sshd: reloaded"
        elif [ -s /run/sshd.pid ] && kill -HUP "$(cat /run/sshd.pid)" 2>/dev/null; then
            say "sshd: reloaded"
        else
            say "WARNING: sshd does not seem to run; start it to read $file"
        fi
    fi
    rm -f "$saved" "$saved.new"
    say "sshd: $DEPLOY_USER may forward TCP and Unix sockets"
}

# --- nginx: log format, the app's server, a placeholder upstream ---------------
step_nginx() {
    command -v nginx >/dev/null 2>&1 || die "nginx is not installed (the packages step)"
    grep -Eq '^[[:space:]]*include[[:space:]]+/etc/nginx/conf\.d/\*\.conf' /etc/nginx/nginx.conf ||
        die "/etc/nginx/nginx.conf does not include /etc/nginx/conf.d/*.conf in its http block: add it"
    mkdir -p /etc/nginx/conf.d/upstreams
    changed=""
    # `combined` with the request time, the upstream's time and address, which
    # max-error-rate, max-latency and the per-colour counts read. One file for
    # every app: `00-` so it comes before the servers that use it.
    put /etc/nginx/conf.d/00-deploy-action-log-format.conf 0644 <<'EOF' && changed=1
# Written by deploy-action's host preparation (docs/hosts/user-data.sh).
log_format deploy_action '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                         '"$http_referer" "$http_user_agent" rt=$request_time urt=$upstream_response_time ua=$upstream_addr';
EOF
    put "/etc/nginx/conf.d/$APP.conf" 0644 <<EOF && changed=1
# The front door of $APP, written by deploy-action's host preparation
# (docs/hosts/user-data.sh). The upstream ${APP}_backend is in
# upstreams/$APP.conf, the file each deploy rewrites (then nginx -t, reload).
include /etc/nginx/conf.d/upstreams/$APP.conf;

server {
    listen $HTTP_PORT default_server;
    access_log /var/log/nginx/access.log deploy_action;

    location / {
        proxy_pass http://${APP}_backend;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        proxy_set_header X-Real-IP \$remote_addr;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_connect_timeout 2s;
        proxy_send_timeout 30s;
        proxy_read_timeout 30s;
        proxy_next_upstream error timeout http_502;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        # How deploy-action proves which colour answers after a switch.
        add_header X-Upstream-Addr \$upstream_addr always;
    }
}
EOF
    # Until the first deploy writes it: nginx answers 502.
    if [ ! -e "/etc/nginx/conf.d/upstreams/$APP.conf" ]; then
        put "/etc/nginx/conf.d/upstreams/$APP.conf" 0644 <<EOF && changed=1
upstream ${APP}_backend {
    server 127.0.0.1:$BLUE_PORT;
    keepalive 16;
}
EOF
    fi
    # Debian's and Ubuntu's default site is the default server on port 80 too.
    if [ -L /etc/nginx/sites-enabled/default ]; then
        rm -f /etc/nginx/sites-enabled/default
        say "removed /etc/nginx/sites-enabled/default (the distribution's welcome page)"
        changed=1
    fi
    nginx -t -q || die "nginx -t refuses the configuration (above); fix it and run this again" \
        "(a 'duplicate default server' is another server with default_server on port $HTTP_PORT, e.g. in nginx.conf: remove it there)"
    if systemd_running; then
        systemctl enable nginx >/dev/null 2>&1 || true
        if ! systemctl is-active --quiet nginx; then
            systemctl start nginx
            say "nginx: started"
        elif [ -n "$changed" ]; then
            systemctl reload nginx
            say "nginx: reloaded"
        fi
    elif [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
        if [ -n "$changed" ]; then
            nginx -s reload
            say "nginx: reloaded"
        fi
    else
        nginx
        say "nginx: started"
    fi
    say "nginx: $APP on port $HTTP_PORT, upstream file /etc/nginx/conf.d/upstreams/$APP.conf"
}

[ $# -gt 0 ] || set -- packages user sshd nginx
for step in "$@"; do
    case $step in
    packages | user | sshd | nginx) "step_$step" ;;
    *) die "unknown step '$step' (steps: packages user sshd nginx)" ;;
    esac
done
say "done: $*"
