#!/usr/bin/env bash
# End-to-end smoke test of the INFN Cloud login chain with the real tools, all on 127.0.0.1 and all
# over HTTPS (a test CA from test_ca.py, as INFN's services are HTTPS):
#   Ceph RGW (ceph/rgw.sh --tls) + test IdP (oidc_provider.py --tls) -> oidc-agent 4.2.6 (own socket) ->
#   oidc-gen device flow (approved at the IdP's test endpoint, --cert-path = the test CA) -> oidc-gen -p
#   (refresh token, exp) -> oidc-token --aud -> STS AssumeRoleWithWebIdentity on RGW -> rclone
#   mkdir/copy/lsjson with the temporary keys -> restic init + backup + snapshots to
#   s3:https://127.0.0.1:PORT/BUCKET/... (rclone and restic trust the CA through SSL_CERT_FILE, which
#   Go adds to the system's certificate directories)
#
# Usage: infn-chain-smoke.sh [RGW_DIR]
#   RGW_DIR absent: a fresh cluster in a temporary directory, removed at the end.
#   RGW_DIR given:  bootstrapped there if empty/missing, restarted with its data otherwise; kept at the
#                   end (stopped), so a second run exercises the restart path and re-reads the restic
#                   repository of the previous run. The test CA is kept with it, in RGW_DIR/tls.
# Env: AUDIENCE (object), ROLE (IAMaccess), ACCOUNT (infncloud-test), REFRESH_LIFETIME (2592000 s),
#      KEEP_WORK=1 keeps the work directory (IdP state, logs) for inspection.
# Every process it starts is stopped by PID on exit (success or failure). Secrets (account password,
# tokens, keys, restic password) go through environment variables or 0600 files, never argv.
set -euo pipefail
umask 077

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
RGW="$HERE/ceph/rgw.sh"
HELPER="$HERE/ceph/rgw_helper.py"
AUDIENCE=${AUDIENCE:-object}
ROLE=${ROLE:-IAMaccess}
ACCOUNT=${ACCOUNT:-infncloud-test}
REFRESH_LIFETIME=${REFRESH_LIFETIME:-2592000}
BUCKET=cloud-backup-smoke

WORK=$(mktemp -d /tmp/infn-smoke.XXXXXX)
if [ -n "${1:-}" ]; then
    mkdir -p "$1"; RGW_DIR=$(cd "$1" && pwd); OWN_RGW_DIR=0
else
    RGW_DIR="$WORK/rgw"; OWN_RGW_DIR=1
fi
TLS_DIR="$RGW_DIR/tls"   # the RGW's ceph.conf names its certificate there: kept with the cluster
CA="$TLS_DIR/ca.pem"
IDP_PID= AGENT_PID= GEN_PID= RGW_STARTED=0
declare -a TIMINGS=()

say() { printf '\n=== %s\n' "$*"; }
t_now() { echo "$EPOCHREALTIME"; }
t_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
record() { TIMINGS+=("$(printf '%-34s %7s s' "$1" "$2")"); printf -- '--- %s: %s s\n' "$1" "$2"; }

wait_gone() {   # wait_gone PID: until the process has exited (or is a zombie)
    local pid=$1 i
    for i in $(seq 1 100); do
        [ -d "/proc/$pid" ] || return 0
        [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    say "cleanup"
    if [ -n "$GEN_PID" ] && kill -0 "$GEN_PID" 2>/dev/null; then kill "$GEN_PID"; wait_gone "$GEN_PID"; fi
    if [ -n "$AGENT_PID" ]; then
        # The agent forks workers (e.g. a re-authentication poller) that outlive the dpid: also end its
        # process group (its own session, made by the agent's first fork), never our own group.
        local pgid
        pgid=$(awk '{ print $5 }' "/proc/$AGENT_PID/stat" 2>/dev/null || true)
        kill "$AGENT_PID" 2>/dev/null; wait_gone "$AGENT_PID"
        if [ -n "$pgid" ] && [ "$pgid" != "$(awk '{ print $5 }' /proc/$$/stat)" ]; then kill -- "-$pgid" 2>/dev/null; fi
        echo "oidc-agent $AGENT_PID stopped"
    fi
    if [ -n "$IDP_PID" ]; then kill "$IDP_PID" 2>/dev/null; wait_gone "$IDP_PID"; echo "IdP $IDP_PID stopped"; fi
    if [ "$RGW_STARTED" = 1 ]; then "$RGW" stop "$RGW_DIR"; fi
    if [ "${KEEP_WORK:-0}" = 1 ] || [ $rc -ne 0 ]; then
        echo "work directory kept: $WORK"
        [ "$OWN_RGW_DIR" = 1 ] && echo "(cluster data and logs in $RGW_DIR)"
    else
        rm -rf "$WORK"
    fi
    if [ $rc -eq 0 ]; then echo "SMOKE TEST PASSED"; else echo "SMOKE TEST FAILED (exit $rc)"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T_ALL=$(t_now)

# ---- 1. Ceph RGW ---------------------------------------------------------------------------------
say "1. Ceph RGW in $RGW_DIR (HTTPS, test CA $CA)"
t=$(t_now)
"$PY" "$HERE/test_ca.py" "$TLS_DIR" > /dev/null
RGW_STARTED=1
"$RGW" start --tls "$TLS_DIR" "$RGW_DIR" > "$WORK/rgw-start.json"
ENDPOINT=$(jq -r .endpoint "$RGW_DIR/env.json")
START_MODE=$(jq -r .start_mode "$RGW_DIR/env.json")
record "rgw start ($START_MODE)" "$(t_since "$t")"
echo "S3 endpoint $ENDPOINT, pids $(jq -c .pids "$RGW_DIR/env.json")"

# ---- 2. test IdP ---------------------------------------------------------------------------------
say "2. test OpenID Connect provider"
t=$(t_now)
"$PY" "$HERE/oidc_provider.py" --state-dir "$WORK/idp" --ready-file "$WORK/idp.port" --tls "$TLS_DIR" \
    --cert-file "$WORK/idp-cert.pem" --refresh-lifetime "$REFRESH_LIFETIME" \
    > "$WORK/idp.stdout" 2> "$WORK/idp.stderr" &
IDP_PID=$!
for i in $(seq 1 100); do [ -s "$WORK/idp.port" ] && break; kill -0 "$IDP_PID" || { cat "$WORK/idp.stderr"; exit 1; }; sleep 0.1; done
ISSUER="https://127.0.0.1:$(cat "$WORK/idp.port")"
curl -sf --cacert "$CA" "$ISSUER/.well-known/openid-configuration" > /dev/null
record "IdP start" "$(t_since "$t")"
echo "issuer $ISSUER (pid $IDP_PID)"

# ---- 3. STS setup --------------------------------------------------------------------------------
say "3. rgw.sh sts-setup (OIDC provider + role $ROLE, aud $AUDIENCE)"
t=$(t_now)
"$RGW" sts-setup "$RGW_DIR" "$ISSUER" "$AUDIENCE" "$WORK/idp-cert.pem" "$ROLE" > "$WORK/sts.json"
record "sts-setup" "$(t_since "$t")"
jq -c '{provider_arn, role_arn, thumbprint}' "$WORK/sts.json"

# ---- 4. oidc-agent -------------------------------------------------------------------------------
say "4. oidc-agent with its own socket"
export OIDC_CONFIG_DIR="$WORK/oidc-agent"
mkdir -p "$OIDC_CONFIG_DIR"
t=$(t_now)
# --no-autoreauthenticate: else, after an invalid_grant, the agent starts a device flow of its own and
# later oidc-token calls block until that flow's device code expires. --no-autoload: never prompt.
AGENT_JSON=$(oidc-agent --json -a "$WORK/agent.sock" --no-autoreauthenticate --no-autoload)
AGENT_PID=$(echo "$AGENT_JSON" | jq -r .dpid)
export OIDC_SOCK; OIDC_SOCK=$(echo "$AGENT_JSON" | jq -r .socket)
record "oidc-agent start" "$(t_since "$t")"
echo "oidc-agent pid $AGENT_PID socket $OIDC_SOCK"

# ---- 5. oidc-gen, device flow --------------------------------------------------------------------
say "5. oidc-gen $ACCOUNT --flow=device (dynamic registration, --cert-path=test CA), approved at the IdP"
export SMOKE_ACCOUNT_PW; SMOKE_ACCOUNT_PW=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
t=$(t_now)
oidc-gen "$ACCOUNT" --iss="$ISSUER" --flow=device --scope="openid profile email offline_access" --cert-path="$CA" \
    --pw-env=SMOKE_ACCOUNT_PW --confirm-default --prompt=none --no-url-call \
    </dev/null > "$WORK/oidc-gen.stdout" 2> "$WORK/oidc-gen.stderr" &
GEN_PID=$!
CODE=
for i in $(seq 1 300); do
    CODE=$(sed -n 's/.*enter the code: *\([A-Z0-9-]*\).*/\1/p' "$WORK/oidc-gen.stderr" | head -n 1)
    [ -n "$CODE" ] && break
    kill -0 "$GEN_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$CODE" ] || { echo "no user code from oidc-gen:"; cat "$WORK/oidc-gen.stdout" "$WORK/oidc-gen.stderr"; exit 1; }
echo "user code $CODE (after $(t_since "$t") s); approving it as the user would"
curl -sf --cacert "$CA" --data-urlencode "user_code=$CODE" "$ISSUER/test/approve"; echo
rc=0; wait "$GEN_PID" || rc=$?
GEN_PID=
cat "$WORK/oidc-gen.stdout"
[ $rc -eq 0 ] || { echo "oidc-gen failed ($rc)"; sed -n '1,8p' "$WORK/oidc-gen.stderr"; exit 1; }
record "oidc-gen device flow" "$(t_since "$t")"
oidc-agent --status --json | jq -c .

# ---- 6. refresh token from the encrypted account ---------------------------------------------------
say "6. oidc-gen -p $ACCOUNT --pw-env=SMOKE_ACCOUNT_PW: refresh token and its exp"
t=$(t_now)
oidc-gen -p "$ACCOUNT" --pw-env=SMOKE_ACCOUNT_PW > "$WORK/account.json"
record "oidc-gen -p" "$(t_since "$t")"
echo "account fields: $(jq -c 'keys' "$WORK/account.json")"
jq -r .refresh_token "$WORK/account.json" > "$WORK/refresh_token"
echo "refresh token: $(cut -c 1-24 "$WORK/refresh_token")… ($(wc -c < "$WORK/refresh_token") bytes)"
echo "header:  $(cut -d. -f1 "$WORK/refresh_token" | "$PY" -c 'import base64,sys; s=sys.stdin.read().strip(); print(base64.urlsafe_b64decode(s+"="*(-len(s)%4)).decode())')"
RT_PAYLOAD=$("$PY" "$HELPER" jwt-payload < "$WORK/refresh_token")
echo "payload: $RT_PAYLOAD"
RT_EXP=$(echo "$RT_PAYLOAD" | jq -r '.exp // empty')
if [ -n "$RT_EXP" ]; then
    echo "refresh token expires $(date -u -d "@$RT_EXP" +%FT%TZ) (in $(( (RT_EXP - $(date +%s)) / 86400 )) days)"
else
    echo "refresh token has no exp: it does not expire"
fi

# ---- 7. access token for the audience ------------------------------------------------------------
say "7. oidc-token $ACCOUNT --aud=$AUDIENCE"
t=$(t_now)
oidc-token "$ACCOUNT" --aud="$AUDIENCE" | tr -d '\n' > "$WORK/access_token"
record "oidc-token --aud" "$(t_since "$t")"
echo "access token claims: $("$PY" "$HELPER" jwt-payload < "$WORK/access_token" | jq -c '{iss,sub,aud,exp,client_id}')"

# ---- 8. STS --------------------------------------------------------------------------------------
say "8. STS AssumeRoleWithWebIdentity on $ENDPOINT"
t=$(t_now)
# The token goes in the POST body from a file (no trailing newline: RGW answers 403 otherwise).
curl -s --cacert "$CA" -X POST "$ENDPOINT/" \
    -d Action=AssumeRoleWithWebIdentity -d Version=2011-06-15 \
    --data-urlencode "RoleArn=arn:aws:iam:::role/$ROLE" -d "RoleSessionName=$ROLE" \
    --data-urlencode "WebIdentityToken@$WORK/access_token" -d DurationSeconds=900 > "$WORK/sts-response.xml"
"$PY" "$HELPER" sts-parse < "$WORK/sts-response.xml" > "$WORK/sts-creds.json"
record "STS AssumeRoleWithWebIdentity" "$(t_since "$t")"
echo "temporary key $(jq -r .AccessKeyId "$WORK/sts-creds.json" | cut -c 1-6)…, expires $(jq -r .Expiration "$WORK/sts-creds.json")"
AK=$(jq -r .AccessKeyId "$WORK/sts-creds.json")
SK=$(jq -r .SecretAccessKey "$WORK/sts-creds.json")
ST=$(jq -r .SessionToken "$WORK/sts-creds.json")

# ---- 9. rclone -----------------------------------------------------------------------------------
say "9. rclone (S3 remote, provider Ceph, temporary keys from env) on bucket $BUCKET"
: > "$WORK/rclone.conf"
export RCLONE_CONFIG="$WORK/rclone.conf"
# rclone's --ca-cert (RCLONE_CA_CERT) would replace the system's CAs; SSL_CERT_FILE adds the test CA.
export SSL_CERT_FILE="$CA"
export RCLONE_CONFIG_INFNTEST_TYPE=s3 RCLONE_CONFIG_INFNTEST_PROVIDER=Ceph \
    RCLONE_CONFIG_INFNTEST_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_INFNTEST_ENV_AUTH=false \
    RCLONE_CONFIG_INFNTEST_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_INFNTEST_SECRET_ACCESS_KEY="$SK" \
    RCLONE_CONFIG_INFNTEST_SESSION_TOKEN="$ST"
echo "hello from $(hostname) at $(date -u +%FT%TZ)" > "$WORK/hello.txt"
t=$(t_now)
env -u AWS_CA_BUNDLE rclone mkdir "infntest:$BUCKET"
env -u AWS_CA_BUNDLE rclone copyto "$WORK/hello.txt" "infntest:$BUCKET/rclone/hello-$$.txt"
env -u AWS_CA_BUNDLE rclone lsjson "infntest:"
env -u AWS_CA_BUNDLE rclone lsf -R "infntest:$BUCKET" --max-depth 2 | head -n 20
record "rclone mkdir+copy+lsjson" "$(t_since "$t")"

# ---- 10. restic ----------------------------------------------------------------------------------
say "10. restic init + backup to s3:$ENDPOINT/$BUCKET/..."
export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_SESSION_TOKEN="$ST"
export RESTIC_CACHE_DIR="$WORK/restic-cache"
PW_FILE="$RGW_DIR/smoke-restic-password"   # kept with the cluster so a restart run can re-open the repo
[ -s "$PW_FILE" ] || head -c 24 /dev/urandom | base64 > "$PW_FILE"
chmod 600 "$PW_FILE"
export RESTIC_PASSWORD_FILE="$PW_FILE"
if [ -s "$RGW_DIR/smoke-last-repo" ]; then
    PREV=$(cat "$RGW_DIR/smoke-last-repo")
    echo "previous run's repository $PREV (data kept across the restart?):"
    t=$(t_now)
    env -u AWS_CA_BUNDLE restic -r "$PREV" snapshots --compact
    record "restic snapshots (previous repo)" "$(t_since "$t")"
fi
REPO="s3:$ENDPOINT/$BUCKET/restic-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$WORK/src"
head -c 20000000 /dev/urandom > "$WORK/src/random-20MB.bin"
for i in $(seq 1 200); do echo "file $i $(date)" > "$WORK/src/small-$i.txt"; done
t=$(t_now)
env -u AWS_CA_BUNDLE restic -r "$REPO" init
record "restic init" "$(t_since "$t")"
t=$(t_now)
env -u AWS_CA_BUNDLE restic -r "$REPO" backup --json "$WORK/src" | tail -n 1 \
    | jq -c '{snapshot_id, files_new, data_added, total_duration}'
record "restic backup (20 MB + 200 files)" "$(t_since "$t")"
env -u AWS_CA_BUNDLE restic -r "$REPO" snapshots --compact
echo "$REPO" > "$RGW_DIR/smoke-last-repo"

# ---- summary -------------------------------------------------------------------------------------
say "RSS (kB) of the daemons"
ps -o pid=,rss=,comm= -p "$(jq -r '.pids | [.[]] | map(tostring) | join(",")' "$RGW_DIR/env.json"),$IDP_PID,$AGENT_PID"
say "timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%-34s %7s s\n' "total" "$(t_since "$T_ALL")"
