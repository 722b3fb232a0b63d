#!/usr/bin/env bash
# A real single-node Ceph RGW (Debian bookworm ceph 16.2) on 127.0.0.1, with STS, for tests.
# One monitor + one bluestore OSD on a sparse file + radosgw (beast), no mgr; everything (config,
# keyrings, data, admin sockets, logs, PIDs) lives under one directory DIR.
#
#   rgw.sh install                 apt-get install ceph-mon ceph-osd radosgw ceph-common (and the tools
#                                  the smoke test uses) if missing; retries once on a dpkg error
#   rgw.sh start [--tls CERTDIR] DIR [PORT]
#                                  bootstrap a cluster in DIR (first time) or restart it (data kept);
#                                  PORT: S3 port (first time default: a free port; on restart default:
#                                  the previous one). --tls CERTDIR: S3 and STS over HTTPS only, with
#                                  CERTDIR/server.pem and server-key.pem (Tests/Fixtures/test_ca.py CERTDIR;
#                                  clients trust CERTDIR/ca.pem); on restart default: as before.
#                                  Waits until S3 answers, then writes DIR/env.json (mode 0600) and prints
#                                  it: endpoint (http:// or https://), port, ca_file (TLS only), access_key,
#                                  secret_key (user "test", caps roles=*;oidc-provider=*), pids {mon.a, osd.0, rgw.a}, ...
#   rgw.sh stop DIR                stop every daemon by PID (TERM, then KILL after 30 s) and wait for exit
#   rgw.sh status DIR              print "name pid running|stopped" per daemon; exit 0 if all run
#   rgw.sh sts-setup DIR ISSUER_URL AUDIENCE CERT_PEM_FILE ROLE_NAME
#                                  create the OIDC provider (thumbprint = SHA-1 of the cert's DER) and
#                                  the role (trust: that provider, app_id = AUDIENCE; policy: s3:*),
#                                  replacing existing ones; writes DIR/sts.json and prints it
# Env: PYTHON (default python3), RGW_START_TIMEOUT (seconds per wait, default 120).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
HELPER="$HERE/rgw_helper.py"
TIMEOUT=${RGW_START_TIMEOUT:-120}
DAEMONS=(mon.a osd.0 rgw.a)

log() { printf '[rgw.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- install -------------------------------------------------------------------------------------
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

cmd_install() {
    local missing=() pkg
    command -v ceph-mon >/dev/null || missing+=(ceph-mon)
    command -v ceph-osd >/dev/null || missing+=(ceph-osd)
    command -v radosgw >/dev/null || missing+=(radosgw)
    command -v ceph >/dev/null && command -v radosgw-admin >/dev/null && command -v monmaptool >/dev/null \
        || missing+=(ceph-common)
    command -v uuidgen >/dev/null || missing+=(uuid-runtime)
    command -v curl >/dev/null || missing+=(curl)
    # what the smoke test (infn-chain-smoke.sh) drives
    command -v oidc-agent >/dev/null || missing+=(oidc-agent-cli)
    command -v rclone >/dev/null || missing+=(rclone)
    command -v restic >/dev/null || missing+=(restic)
    command -v jq >/dev/null || missing+=(jq)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        if ! apt_install "${missing[@]}"; then
            log "apt-get install failed (a dpkg archive error happens once in a while): retrying"
            DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
            apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed twice"
        fi
    else
        log "ceph packages already installed: $(ceph --version)"
    fi
    # oidc_provider.py needs `cryptography`; rgw_helper.py needs only the standard library.
    if ! "$PY" -c 'import cryptography' 2>/dev/null; then
        log "installing the Python package cryptography for $PY"
        "$PY" -m pip install -q cryptography 2>/dev/null \
            || apt_install python3-cryptography \
            || die "cannot install cryptography for $PY"
    fi
}

# ---- helpers -------------------------------------------------------------------------------------
# A PID is ours when it is alive (not a zombie) and its command line names this DIR's ceph.conf.
is_ours() {
    local pid=$1 conf=$2 state
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1
    tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$conf"
}

log_name() { case $1 in rgw.a) echo client.rgw.a.log ;; *) echo "$1.log" ;; esac; }

pid_of() { cat "$DIR/pids/$1" 2>/dev/null || true; }

running() { is_ours "$(pid_of "$1")" "$CONF"; }

ceph_() { ceph -c "$CONF" --connect-timeout 10 "$@"; }

set_dir() {   # also takes DIR/.lock, so two rgw.sh calls on one DIR do not interleave
    [ -n "${1:-}" ] || die "missing DIR"
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    CONF="$DIR/ceph.conf"
    export CEPH_CONF="$CONF"
    exec 9>>"$DIR/.lock"
    flock -w 600 9 || die "another rgw.sh holds $DIR/.lock"
}

# Start a daemon in the foreground (-f), in its own session, detached from us; record its PID.
launch() {
    local name=$1; shift
    if running "$name"; then
        log "$name already running (pid $(pid_of "$name"))"
        return 0
    fi
    # 9>&-: the daemon must not inherit (and hold forever) the DIR/.lock descriptor
    setsid "$@" -f -c "$CONF" </dev/null >>"$DIR/logs/$name.stdout" 2>&1 9>&- &
    echo $! > "$DIR/pids/$name"
    log "started $name (pid $!)"
}

wait_for() {   # wait_for WHAT DAEMON COMMAND...: poll COMMAND until it succeeds; fail if DAEMON died
    local what=$1 daemon=$2 t0 rc; shift 2
    t0=$(date +%s)
    while true; do
        rc=0; "$@" >/dev/null 2>&1 || rc=$?
        [ $rc -ne 0 ] || break
        if [ $rc -eq 99 ]; then   # the check saw a fatal error in the daemon's log
            tail -n "+${RGW_LOG_FROM:-1}" "$DIR/logs/$(log_name "$daemon")" 2>/dev/null | grep -E 'failed|ERROR' | tail -n 5 >&2 || true
            die "$daemon failed while waiting for $what (logs in $DIR/logs)"
        fi
        if ! running "$daemon"; then
            tail -n 30 "$DIR/logs/$daemon.stdout" "$DIR/logs/$(log_name "$daemon")" 2>/dev/null >&2 || true
            die "$daemon exited while waiting for $what (logs in $DIR/logs)"
        fi
        if [ $(( $(date +%s) - t0 )) -ge "$TIMEOUT" ]; then
            tail -n 30 "$DIR/logs/$(log_name "$daemon")" 2>/dev/null >&2 || true
            die "timed out after ${TIMEOUT}s waiting for $what"
        fi
        sleep 0.5
    done
}

mon_up() { ceph_ mon stat; }
osd_up() { [ "$(ceph_ osd stat -f json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])')" = 1 ]; }
s3_up() {
    # "failed to bind address" (port taken), a certificate it cannot load: fail at once with a clear message.
    if awk -v from="$RGW_LOG_FROM" 'NR >= from && /failed initializing frontend/ { found = 1 } END { exit !found }' \
        "$DIR/logs/client.rgw.a.log" 2>/dev/null; then
        return 99
    fi
    if [ -n "$TLS_DIR" ]; then
        [ "$(curl -s -m 5 --cacert "$TLS_DIR/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/")" = 200 ]
    else
        [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")" = 200 ]
    fi
}

# The frontends line of ceph.conf: plain HTTP, or HTTPS only (TLS_DIR set).
frontends_line() {
    if [ -n "$TLS_DIR" ]; then
        echo "rgw frontends = beast ssl_endpoint=127.0.0.1:$1 ssl_certificate=$TLS_DIR/server.pem ssl_private_key=$TLS_DIR/server-key.pem"
    else
        echo "rgw frontends = beast endpoint=127.0.0.1:$1"
    fi
}

# With TLS, RGW fetches the (https) issuer's discovery document and JWKS for STS with libcurl and the
# system's CA store, which does not hold the test CA; RGW 16.2 has no setting for another CA there.
# So this test RGW does not verify the identity provider's certificate (what is under test is the
# clients: oidc-agent, rclone, restic and cloud-backup, which do verify the RGW's).
verify_line() {
    if [ -n "$TLS_DIR" ]; then echo "rgw verify ssl = false"; else echo "rgw verify ssl = true"; fi
}

# ---- bootstrap -----------------------------------------------------------------------------------
write_conf() {
    local fsid=$1 mon_port=$2 port=$3 sts_key=$4
    (umask 077; cat > "$CONF" <<EOF
# generated by rgw.sh: single-node test cluster (see Tests/Fixtures/README.md)
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000
osd objectstore = bluestore
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
log file = $DIR/logs/\$name.log
crash dir = $DIR/crash
mon data = $DIR/\$name
osd data = $DIR/\$name
[mon]
keyring = $DIR/\$name/keyring
[osd]
keyring = $DIR/\$name/keyring
osd memory target = 1073741824
osd crush update on start = false
bluestore block create = true
bluestore block size = 10737418240
[client]
keyring = $DIR/keyring
[client.rgw.a]
keyring = $DIR/rgw.a/keyring
rgw data = $DIR/rgw.a
$(frontends_line "$port")
$(verify_line)
rgw thread pool size = 64
rgw s3 auth use sts = true
rgw sts key = $sts_key
EOF
    )
}

bootstrap() {
    local fsid mon_port sts_key osd_uuid osd_key
    # tls/: the certificates a caller keeps with the cluster (its ceph.conf names them)
    [ -z "$(ls -A "$DIR" | grep -vxF -e .lock -e tls)" ] || die "$DIR is not empty and has no ceph.conf: refusing to bootstrap there"
    mkdir -p "$DIR"/{run,logs,crash,pids,mon.a,osd.0,rgw.a}
    chmod 700 "$DIR"
    fsid=$(uuidgen)
    mon_port=$("$PY" "$HELPER" free-port)
    [ "$PORT" != 0 ] || PORT=$("$PY" "$HELPER" free-port)
    sts_key=$(tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 16 || true)
    [ ${#sts_key} -eq 16 ] || die "could not make a 16-character STS key"
    write_conf "$fsid" "$mon_port" "$PORT" "$sts_key"
    log "bootstrapping in $DIR (fsid $fsid, mon port $mon_port, S3 port $PORT)"

    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
        --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    chmod 600 "$DIR/keyring"
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
        >>"$DIR/logs/mon.a.stdout" 2>&1 || die "ceph-mon --mkfs failed (see $DIR/logs)"

    launch mon.a ceph-mon -i a
    wait_for "the monitor" mon.a mon_up
    log "monitor up after $(elapsed "$T0") s"

    osd_uuid=$(uuidgen)
    osd_key=$(ceph-authtool --gen-print-key)
    (umask 077; printf '{"cephx_secret": "%s"}\n' "$osd_key" > "$DIR/osd.0/new.json")
    ceph_ osd new "$osd_uuid" -i "$DIR/osd.0/new.json" >/dev/null
    rm -f "$DIR/osd.0/new.json"
    # `ceph-osd --mkfs` does not write the keyring: write it ourselves (the key stays off argv).
    (umask 077; printf '[osd.0]\n\tkey = %s\n' "$osd_key" > "$DIR/osd.0/keyring")
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/logs/osd.0.stdout" 2>&1 \
        || die "ceph-osd --mkfs failed (see $DIR/logs)"
    ceph_ osd crush add osd.0 1.0 root=default host=localhost >/dev/null 2>>"$DIR/logs/ceph-cli.log"
    log "OSD created after $(elapsed "$T0") s"
    launch osd.0 ceph-osd -i 0
    wait_for "the OSD" osd.0 osd_up
    log "OSD up after $(elapsed "$T0") s"

    ceph_ auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
        -o "$DIR/rgw.a/keyring" >/dev/null
    chmod 600 "$DIR/rgw.a/keyring"
}

# A start that fails stops whatever it started, so a broken start leaks no daemon.
start_failed() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        log "start failed (exit $rc): stopping the daemons of $DIR"
        stop_all || true
    fi
    exit $rc
}

cmd_start() {
    TLS_DIR=
    local tls_given=0 args=()
    while [ $# -gt 0 ]; do
        case $1 in
            --tls) [ $# -ge 2 ] || die "--tls needs a directory (made by Tests/Fixtures/test_ca.py)"
                   TLS_DIR=$(cd "$2" && pwd) || die "--tls $2: no such directory"; tls_given=1; shift 2 ;;
            *) args+=("$1"); shift ;;
        esac
    done
    [ ${#args[@]} -ge 1 ] && [ ${#args[@]} -le 2 ] || die "usage: rgw.sh start [--tls CERTDIR] DIR [PORT]"
    if [ -n "$TLS_DIR" ]; then
        for file in ca.pem server.pem server-key.pem; do
            [ -r "$TLS_DIR/$file" ] || die "--tls $TLS_DIR: $file missing (make it with Tests/Fixtures/test_ca.py $TLS_DIR)"
        done
    fi
    set_dir "${args[0]}"
    PORT=${args[1]:-}
    T0=$(now)
    trap start_failed EXIT
    local mode=restart keys
    if [ ! -f "$CONF" ]; then
        mode=cold
        PORT=${PORT:-0}
        bootstrap
    else
        local conf_port conf_tls line
        conf_port=$(sed -n 's/^rgw frontends = beast \(ssl_\)\{0,1\}endpoint=127.0.0.1:\([0-9]*\).*$/\2/p' "$CONF")
        conf_tls=$(sed -n 's/^rgw frontends = beast ssl_endpoint=.* ssl_certificate=\(.*\)\/server.pem .*$/\1/p' "$CONF")
        [ "$tls_given" = 1 ] || TLS_DIR=$conf_tls
        [ -n "$PORT" ] && [ "$PORT" != 0 ] || PORT=$conf_port
        if [ "$PORT" != "$conf_port" ] || [ "$TLS_DIR" != "$conf_tls" ]; then
            running rgw.a && die "rgw.a is running on port $conf_port: stop first to change the port or TLS"
            line=$(frontends_line "$PORT")
            sed -i -e "s|^rgw frontends = .*|$line|" -e "s|^rgw verify ssl = .*|$(verify_line)|" "$CONF"
            grep -q '^rgw verify ssl = ' "$CONF" || sed -i "s|^rgw frontends = .*|&\n$(verify_line)|" "$CONF"
        fi
        log "restarting the cluster in $DIR (S3 port $PORT)"
        launch mon.a ceph-mon -i a
        wait_for "the monitor" mon.a mon_up
        launch osd.0 ceph-osd -i 0
        wait_for "the OSD" osd.0 osd_up
    fi
    RGW_LOG_FROM=1
    [ ! -f "$DIR/logs/client.rgw.a.log" ] || RGW_LOG_FROM=$(( $(wc -l < "$DIR/logs/client.rgw.a.log") + 1 ))
    launch rgw.a radosgw -n client.rgw.a
    wait_for "S3 on 127.0.0.1:$PORT" rgw.a s3_up
    log "S3 answers after $(elapsed "$T0") s"

    if ! keys=$(radosgw-admin -c "$CONF" user info --uid=test 2>/dev/null | "$PY" "$HELPER" user-keys 2>/dev/null); then
        keys=$(radosgw-admin -c "$CONF" user create --uid=test --display-name="cloud-backup test" \
            2>>"$DIR/logs/radosgw-admin.log" | "$PY" "$HELPER" user-keys) || die "radosgw-admin user create failed"
        radosgw-admin -c "$CONF" caps add --uid=test --caps="roles=*;oidc-provider=*" \
            >/dev/null 2>>"$DIR/logs/radosgw-admin.log" || die "radosgw-admin caps add failed"
    fi
    local scheme=http tls_fields=()
    if [ -n "$TLS_DIR" ]; then scheme=https; tls_fields=(ca_file="$TLS_DIR/ca.pem"); fi
    ADMIN_ACCESS_KEY=${keys% *} ADMIN_SECRET_KEY=${keys#* } "$PY" "$HELPER" env-json "$DIR/env.json" \
        dir="$DIR" endpoint="$scheme://127.0.0.1:$PORT" port="$PORT" user=test ceph_conf="$CONF" "${tls_fields[@]}" \
        logs="$DIR/logs" start_mode="$mode" start_seconds="$(elapsed "$T0")" \
        pid.mon.a="$(pid_of mon.a)" pid.osd.0="$(pid_of osd.0)" pid.rgw.a="$(pid_of rgw.a)"
    log "ready ($mode start) in $(elapsed "$T0") s"
    trap - EXIT
}

cmd_stop() {
    set_dir "$1"
    stop_all
}

stop_all() {
    local name pid t0 stopped=()
    # rgw first, then the OSD, then the monitor.
    for name in rgw.a osd.0 mon.a; do
        pid=$(pid_of "$name")
        if ! is_ours "$pid" "$CONF"; then
            rm -f "$DIR/pids/$name"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        t0=$(date +%s)
        while is_ours "$pid" "$CONF"; do
            if [ $(( $(date +%s) - t0 )) -ge 30 ]; then
                log "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            sleep 0.2
        done
        rm -f "$DIR/pids/$name"
        stopped+=("$name:$pid")
    done
    log "stopped: ${stopped[*]:-nothing was running}"
}

cmd_status() {
    set_dir "$1"
    local name rc=0
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then echo "$name $(pid_of "$name") running"; else echo "$name - stopped"; rc=1; fi
    done
    return $rc
}

cmd_sts_setup() {
    [ $# -eq 5 ] || die "usage: rgw.sh sts-setup DIR ISSUER_URL AUDIENCE CERT_PEM_FILE ROLE_NAME"
    set_dir "$1"
    [ -f "$DIR/env.json" ] || die "$DIR/env.json missing: run rgw.sh start first"
    "$PY" "$HELPER" sts-setup "$DIR/env.json" "$2" "$3" "$4" "$5"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; [ $# -eq 1 ] || die "usage: rgw.sh stop DIR"; cmd_stop "$1" ;;
    status) shift; cmd_status "$@" ;;
    sts-setup) shift; cmd_sts_setup "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
