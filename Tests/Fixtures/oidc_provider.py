#!/usr/bin/env python3
"""A test OpenID Connect provider (INDIGO-IAM-like) for oidc-agent 4.2.6 and Ceph RGW STS.

Usage: oidc_provider.py [--port N] [--ready-file PATH] [--state-dir DIR] [--cert-file PATH]
                        [--tls DIR] [--refresh-lifetime S] [--access-lifetime S] [--device-lifetime S]
                        [--interval S] [--default-audience AUD] [--sub NAME]

Listens on 127.0.0.1 only. Issuer = http://127.0.0.1:PORT (no trailing slash), or https://127.0.0.1:PORT
with --tls DIR: TLS with DIR/server.pem and DIR/server-key.pem, as `test_ca.py DIR` writes them (clients
trust DIR/ca.pem). --port 0 (default) picks a free port; the port number alone is written to
--ready-file (atomically) once the server answers. Needs only the Python standard library and
`cryptography`.

Endpoints (all paths below the issuer):
  GET  /.well-known/openid-configuration   discovery
  GET  /jwks                               RS256 key with x5c (self-signed cert)
  POST /register                           dynamic client registration (JSON), DELETE /register/<id>
  POST /devicecode                         device authorization (client_id, scope)
  POST /token                              grants: urn:ietf:params:oauth:grant-type:device_code,
                                           refresh_token (audience= or resource= sets `aud`)
  GET  /userinfo                           Bearer access token -> claims
  POST /revoke                             token revocation
  GET  /device                             a page a person would use; POST /device approves too
Test-only control:
  POST /test/approve   user_code=XXXX-XXXX [&sub=NAME]   (form or JSON) approve a pending device code
  POST /test/deny      user_code=XXXX-XXXX                deny it (token endpoint -> access_denied)
  POST /test/mode      mode=normal|down|reset|invalid_grant|slow_down
        down: every non-/test request gets 503 {"error":"temporarily_unavailable"};
        reset: the connection is closed without an answer; invalid_grant: refresh grants fail with
        400 invalid_grant (a revoked/expired refresh token); slow_down: device polls get slow_down.
  POST /test/revoke-all                                   mark every refresh token revoked
  GET  /test/state                                        the whole state as JSON
  Signals: SIGUSR1 = mode down, SIGUSR2 = mode normal. SIGTERM/SIGINT = clean exit.

Tokens:
  refresh token: INDIGO-IAM style unsigned JWT, header {"alg":"none"}, payload {iss, sub, iat, jti,
                 exp = iat + --refresh-lifetime} (no exp when the lifetime is 0); not rotated.
  access token:  RS256 JWT {iss, sub, aud (requested audience, else --default-audience, else none),
                 exp, iat, nbf, jti, client_id, scope}; header kid matches the JWKS.
State dir (mode 0700; files 0600): signing-key.pem + signing-cert.pem (reused on restart, so a
restarted provider keeps its thumbprint and still accepts its refresh tokens), state.json (clients,
refresh tokens, device codes, issued access tokens) and events.jsonl (one line per request: time,
method, path, grant_type, status, error). The cert PEM is also copied to --cert-file when given.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote_plus, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = ["openid", "profile", "email", "offline_access", "address", "phone"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def write_private(path, data, mode=0o600):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def load_or_make_key(state_dir):
    key_path = os.path.join(state_dir, "signing-key.pem")
    cert_path = os.path.join(state_dir, "signing-cert.pem")
    if os.path.exists(key_path) and os.path.exists(cert_path):
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return key, cert, cert_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloud-backup test OIDC provider")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key, cert, cert_path


class Provider:
    def __init__(self, args, state_dir):
        self.args = args
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.key, self.cert, self.cert_path = load_or_make_key(state_dir)
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.thumbprint = hashlib.sha1(der).hexdigest()
        self.kid = self.thumbprint[:16]
        nums = self.key.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                    "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")),
                    "x5c": [base64.b64encode(der).decode()],
                    "x5t": b64url(hashlib.sha1(der).digest())}
        self.mode = "normal"
        self.issuer = None
        self.state_path = os.path.join(state_dir, "state.json")
        self.events_path = os.path.join(state_dir, "events.jsonl")
        self.state = {"clients": {}, "refresh_tokens": {}, "device_codes": {}, "access_tokens": []}
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.state.update(json.load(f))

    # ---- persistence -------------------------------------------------------------------------
    def save(self):
        with self.lock:
            write_private(self.state_path, json.dumps(self.state, indent=1, sort_keys=True))

    def event(self, **fields):
        fields["time"] = time.time()
        with self.lock:
            fd = os.open(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(fields, sort_keys=True) + "\n")

    # ---- tokens ------------------------------------------------------------------------------
    def sign(self, claims):
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = (b64url_json(header) + "." + b64url_json(claims)).encode()
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64url(signature)

    def make_refresh_token(self, client_id, sub, scope):
        now = int(time.time())
        jti = str(uuid.uuid4())
        payload = {"iss": self.issuer, "sub": sub, "iat": now, "jti": jti}
        if self.args.refresh_lifetime > 0:
            payload["exp"] = now + self.args.refresh_lifetime
        token = b64url_json({"alg": "none"}) + "." + b64url_json(payload) + "."
        self.state["refresh_tokens"][jti] = {"token": token, "client_id": client_id, "sub": sub,
                                             "scope": scope, "iat": now, "exp": payload.get("exp"),
                                             "revoked": False, "uses": 0}
        return token

    def make_tokens(self, client_id, sub, scope, audience, refresh_token=None):
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims = {"iss": self.issuer, "sub": sub, "iat": now, "nbf": now,
                  "exp": now + self.args.access_lifetime, "jti": jti, "client_id": client_id, "scope": scope}
        aud = audience or self.args.default_audience
        if aud:
            auds = aud.split()
            claims["aud"] = auds[0] if len(auds) == 1 else auds
        response = {"access_token": self.sign(claims), "token_type": "Bearer",
                    "expires_in": self.args.access_lifetime, "scope": scope}
        if "openid" in scope.split():
            response["id_token"] = self.sign({"iss": self.issuer, "sub": sub, "aud": client_id, "iat": now,
                                              "exp": now + self.args.access_lifetime, "jti": str(uuid.uuid4()),
                                              "preferred_username": sub})
        if refresh_token:
            response["refresh_token"] = refresh_token
        elif "offline_access" in scope.split():
            response["refresh_token"] = self.make_refresh_token(client_id, sub, scope)
        self.state["access_tokens"].append({"jti": jti, "client_id": client_id, "sub": sub, "aud": claims.get("aud"),
                                            "iat": now, "exp": claims["exp"], "scope": scope})
        del self.state["access_tokens"][:-200]
        return response

    def find_refresh(self, token):
        for jti, entry in self.state["refresh_tokens"].items():
            if entry["token"] == token:
                return jti, entry
        return None, None

    def verify_access_token(self, token):
        try:
            header_b64, payload_b64, sig_b64 = token.split(".")
            signing_input = (header_b64 + "." + payload_b64).encode()
            sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
            self.key.public_key().verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
            claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
        except Exception:
            return None
        if claims.get("exp", 0) < time.time():
            return None
        return claims


def make_user_code():
    alphabet = "BCDFGHJKLMNPQRSTVWXZ"
    raw = "".join(secrets.choice(alphabet) for _ in range(8))
    return raw[:4] + "-" + raw[4:]


def handler_class(p):
    args = p.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "test-oidc-provider/1"

        def log_message(self, *a):
            pass

        # ---- plumbing ------------------------------------------------------------------------
        def read_params(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    data = {}
                return data if isinstance(data, dict) else {}, body
            params = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
            return params, body

        def send_json(self, status, obj, headers=None):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.status_sent = status

        def send_text(self, status, text, ctype="text/html; charset=utf-8"):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.status_sent = status

        def oauth_error(self, status, error, description=None):
            body = {"error": error}
            if description:
                body["error_description"] = description
            self.send_json(status, body)
            self.error_sent = error

        def client_auth(self, params):
            """Returns (client_id, client or None, authenticated)."""
            auth = self.headers.get("Authorization") or ""
            cid, secret = params.get("client_id"), params.get("client_secret")
            if auth.lower().startswith("basic "):
                try:
                    raw = base64.b64decode(auth[6:].strip()).decode()
                    cid, _, secret = raw.partition(":")
                    cid, secret = unquote_plus(cid), unquote_plus(secret)
                except Exception:
                    return None, None, False
            client = p.state["clients"].get(cid or "")
            if client is None:
                return cid, None, False
            return cid, client, secrets.compare_digest(client["client_secret"], secret or "")

        def dispatch(self, method):
            self.status_sent = 0
            self.error_sent = None
            self.grant = None
            path = urlsplit(self.path).path
            path = "/" + path.lstrip("/")          # RGW asks for <iss>/.well-known/... (maybe "//")
            try:
                if not path.startswith("/test/"):
                    if p.mode == "reset":
                        self.close_connection = True
                        try:
                            self.connection.shutdown(2)
                        except OSError:
                            pass
                        p.event(method=method, path=path, status=0, error="reset")
                        return
                    if p.mode == "down":
                        if method == "POST":
                            self.read_params()
                        self.oauth_error(503, "temporarily_unavailable", "test provider is down")
                        return
                route = ROUTES.get((method if method != "HEAD" else "GET", path))
                if route is None and method == "DELETE" and path.startswith("/register/"):
                    route = Handler.delete_client
                if route is None:
                    if method == "POST":
                        self.read_params()
                    self.oauth_error(404, "not_found", path)
                    return
                with p.lock:
                    route(self)
            finally:
                if self.status_sent or self.error_sent:
                    p.event(method=method, path=path, status=self.status_sent, grant_type=self.grant,
                            error=self.error_sent)

        def do_GET(self):
            self.dispatch("GET")

        def do_HEAD(self):
            self.dispatch("HEAD")

        def do_POST(self):
            self.dispatch("POST")

        def do_DELETE(self):
            self.dispatch("DELETE")

        # ---- public endpoints ----------------------------------------------------------------
        def discovery(self):
            i = p.issuer
            self.send_json(200, {
                "issuer": i,
                "authorization_endpoint": i + "/authorize",
                "token_endpoint": i + "/token",
                "userinfo_endpoint": i + "/userinfo",
                "jwks_uri": i + "/jwks",
                "registration_endpoint": i + "/register",
                "device_authorization_endpoint": i + "/devicecode",
                "revocation_endpoint": i + "/revoke",
                "scopes_supported": SCOPES,
                "response_types_supported": ["code", "token", "id_token", "code id_token"],
                "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT,
                                          "urn:ietf:params:oauth:grant-type:token-exchange"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256", "plain"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "name", "preferred_username", "email"],
            })

        def jwks(self):
            self.send_json(200, {"keys": [p.jwk]})

        def register(self):
            req, _ = self.read_params()
            cid = str(uuid.uuid4())
            secret = secrets.token_urlsafe(48)
            scope = req.get("scope") or "openid profile email offline_access"
            grant_types = req.get("grant_types") or ["authorization_code", "refresh_token"]
            client = {
                "client_id": cid, "client_secret": secret,
                "client_id_issued_at": int(time.time()), "client_secret_expires_at": 0,
                "client_name": req.get("client_name", ""),
                "redirect_uris": req.get("redirect_uris", []),
                "grant_types": grant_types,
                "response_types": req.get("response_types", ["code"]),
                "scope": scope,
                "application_type": req.get("application_type", "web"),
                "token_endpoint_auth_method": req.get("token_endpoint_auth_method", "client_secret_basic"),
                "registration_access_token": secrets.token_urlsafe(32),
                "registration_client_uri": p.issuer + "/register/" + cid,
            }
            p.state["clients"][cid] = client
            p.save()
            self.send_json(201, client)

        def delete_client(self):
            cid = urlsplit(self.path).path.rsplit("/", 1)[-1]
            if p.state["clients"].pop(cid, None) is None:
                self.oauth_error(404, "invalid_client")
                return
            p.save()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.status_sent = 204

        def devicecode(self):
            params, _ = self.read_params()
            cid, client, ok = self.client_auth(params)
            if client is None or (not ok and (params.get("client_secret") or self.headers.get("Authorization"))):
                self.oauth_error(401, "invalid_client", "unknown client or bad secret")
                return
            scope = params.get("scope") or client["scope"]
            device_code = secrets.token_urlsafe(32)
            user_code = make_user_code()
            now = time.time()
            p.state["device_codes"][device_code] = {
                "client_id": cid, "scope": scope, "user_code": user_code, "status": "pending",
                "created": now, "expires": now + args.device_lifetime, "interval": args.interval,
                "last_poll": 0, "sub": None}
            p.save()
            base = p.issuer + "/device"
            self.send_json(200, {"device_code": device_code, "user_code": user_code,
                                 "verification_uri": base,
                                 "verification_uri_complete": base + "?user_code=" + quote(user_code),
                                 "expires_in": args.device_lifetime, "interval": args.interval})

        def token(self):
            params, _ = self.read_params()
            grant = params.get("grant_type")
            self.grant = grant
            cid, client, ok = self.client_auth(params)
            if client is None or not ok:
                self.oauth_error(401, "invalid_client", "Bad client credentials")
                return
            if grant == DEVICE_GRANT:
                self.device_grant(params, cid)
            elif grant == "refresh_token":
                self.refresh_grant(params, cid)
            else:
                self.oauth_error(400, "unsupported_grant_type", str(grant))

        def device_grant(self, params, cid):
            entry = p.state["device_codes"].get(params.get("device_code", ""))
            if entry is None or entry["client_id"] != cid:
                self.oauth_error(400, "invalid_grant", "unknown device code")
                return
            now = time.time()
            if now > entry["expires"]:
                self.oauth_error(400, "expired_token", "the device code has expired")
                return
            if entry["status"] == "denied":
                self.oauth_error(400, "access_denied", "the user denied the request")
                return
            if entry["status"] == "used":
                self.oauth_error(400, "invalid_grant", "device code already used")
                return
            # RFC 8628 wants the client to add 5 s per slow_down; oidc-agent 4.2.6 adds only 1 s, so the
            # check stays at the announced interval (with 20 % slack) instead of growing.
            too_fast = entry["last_poll"] and now - entry["last_poll"] < entry["interval"] * 0.8
            entry["last_poll"] = now
            if p.mode == "slow_down" or too_fast:
                entry["slow_downs"] = entry.get("slow_downs", 0) + 1
                p.save()
                self.oauth_error(400, "slow_down", "polling too fast")
                return
            if entry["status"] == "pending":
                p.save()
                self.oauth_error(400, "authorization_pending", "authorization pending")
                return
            entry["status"] = "used"
            response = p.make_tokens(cid, entry["sub"], entry["scope"],
                                     params.get("audience") or params.get("resource"))
            p.save()
            self.send_json(200, response)

        def refresh_grant(self, params, cid):
            if p.mode == "invalid_grant":
                self.oauth_error(400, "invalid_grant", "Invalid refresh token (test mode)")
                return
            jti, entry = p.find_refresh(params.get("refresh_token", ""))
            if entry is None or entry["client_id"] != cid or entry["revoked"]:
                self.oauth_error(400, "invalid_grant", "Invalid refresh token")
                return
            if entry["exp"] is not None and entry["exp"] < time.time():
                self.oauth_error(400, "invalid_grant", "Invalid refresh token: expired")
                return
            scope = params.get("scope") or entry["scope"]
            if not set(scope.split()) <= set(entry["scope"].split()):
                self.oauth_error(400, "invalid_scope", "scope exceeds the original grant")
                return
            entry["uses"] += 1
            response = p.make_tokens(cid, entry["sub"], scope,
                                     params.get("audience") or params.get("resource"),
                                     refresh_token=entry["token"])
            p.save()
            self.send_json(200, response)

        def userinfo(self):
            if self.command == "POST":
                self.read_params()
            auth = self.headers.get("Authorization") or ""
            claims = p.verify_access_token(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
            if claims is None:
                self.send_json(401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
                self.error_sent = "invalid_token"
                return
            sub = claims["sub"]
            self.send_json(200, {"sub": sub, "preferred_username": sub, "name": "Test User " + sub,
                                 "email": sub + "@example.invalid", "email_verified": True})

        def revoke(self):
            params, _ = self.read_params()
            _, entry = p.find_refresh(params.get("token", ""))
            if entry is not None:
                entry["revoked"] = True
                p.save()
            self.send_json(200, {})

        def device_page(self):
            if self.command == "POST":
                self.approve()
                return
            code = parse_qs(urlsplit(self.path).query).get("user_code", [""])[0]
            self.send_text(200, "<html><body><form method=post action=/device>"
                                "<input name=user_code value='%s'><input type=submit value=Approve>"
                                "</form></body></html>" % code.replace("'", ""))

        # ---- test control --------------------------------------------------------------------
        def set_code_status(self, status):
            params, _ = self.read_params()
            code = (params.get("user_code") or "").strip().upper()
            for entry in p.state["device_codes"].values():
                if entry["user_code"] == code and entry["status"] == "pending" and time.time() <= entry["expires"]:
                    entry["status"] = status
                    entry["sub"] = params.get("sub") or args.sub
                    p.save()
                    self.send_json(200, {"user_code": code, "status": status, "client_id": entry["client_id"],
                                         "sub": entry["sub"]})
                    return
            self.oauth_error(404, "unknown_user_code", code)

        def approve(self):
            self.set_code_status("approved")

        def deny(self):
            self.set_code_status("denied")

        def set_mode(self):
            params, _ = self.read_params()
            mode = params.get("mode", "")
            if mode not in ("normal", "down", "reset", "invalid_grant", "slow_down"):
                self.oauth_error(400, "bad_mode", mode)
                return
            p.mode = mode
            self.send_json(200, {"mode": mode})

        def revoke_all(self):
            self.read_params()
            for entry in p.state["refresh_tokens"].values():
                entry["revoked"] = True
            p.save()
            self.send_json(200, {"revoked": len(p.state["refresh_tokens"])})

        def dump_state(self):
            out = dict(p.state)
            out["mode"] = p.mode
            out["issuer"] = p.issuer
            out["thumbprint"] = p.thumbprint
            out["cert_file"] = p.cert_path
            self.send_json(200, out)

    global ROUTES
    ROUTES = {
        ("GET", "/.well-known/openid-configuration"): Handler.discovery,
        ("GET", "/jwks"): Handler.jwks,
        ("POST", "/register"): Handler.register,
        ("POST", "/devicecode"): Handler.devicecode,
        ("POST", "/token"): Handler.token,
        ("GET", "/userinfo"): Handler.userinfo,
        ("POST", "/userinfo"): Handler.userinfo,
        ("POST", "/revoke"): Handler.revoke,
        ("GET", "/device"): Handler.device_page,
        ("POST", "/device"): Handler.device_page,
        ("POST", "/test/approve"): Handler.approve,
        ("POST", "/test/deny"): Handler.deny,
        ("POST", "/test/mode"): Handler.set_mode,
        ("POST", "/test/revoke-all"): Handler.revoke_all,
        ("GET", "/test/state"): Handler.dump_state,
    }
    return Handler


ROUTES = {}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    provider = None

    def handle_error(self, request, client_address):
        """A client that rejects our certificate (a wrong CA) ends the handshake: one event line, not a
        traceback; anything else as usual."""
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            self.provider.event(method="", path="", status=0, error="tls: %s" % error)
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--state-dir")
    parser.add_argument("--cert-file", help="also copy the signing certificate (PEM) here")
    parser.add_argument("--tls", metavar="DIR", help="serve HTTPS with DIR/server.pem and DIR/server-key.pem (test_ca.py DIR)")
    parser.add_argument("--refresh-lifetime", type=int, default=30 * 86400, help="seconds; 0 = no exp")
    parser.add_argument("--access-lifetime", type=int, default=3600)
    parser.add_argument("--device-lifetime", type=int, default=600)
    parser.add_argument("--interval", type=int, default=1, help="device polling interval (s)")
    parser.add_argument("--default-audience", default="", help="aud when the client asks for none")
    parser.add_argument("--sub", default="test-user", help="subject of approved logins")
    args = parser.parse_args()

    state_dir = args.state_dir or tempfile.mkdtemp(prefix="oidc-provider-")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    provider = Provider(args, state_dir)
    server = Server(("127.0.0.1", args.port), handler_class(provider))
    server.provider = provider
    port = server.server_address[1]
    scheme = "http"
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(args.tls, "server.pem"), os.path.join(args.tls, "server-key.pem"))
        # The handshake happens in the request's thread (on its first read), not in accept(): a client
        # that connects and never speaks TLS, or rejects the certificate, cannot stall the others.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    provider.issuer = "%s://127.0.0.1:%d" % (scheme, port)
    if args.cert_file:
        with open(provider.cert_path, "rb") as f:
            write_private(args.cert_file, f.read(), 0o644)

    def set_mode(mode):
        def handler(signum, frame):
            provider.mode = mode
        return handler

    signal.signal(signal.SIGUSR1, set_mode("down"))
    signal.signal(signal.SIGUSR2, set_mode("normal"))

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    info = {"issuer": provider.issuer, "port": port, "pid": os.getpid(), "state_dir": state_dir,
            "cert_file": args.cert_file or provider.cert_path, "thumbprint": provider.thumbprint,
            "ca_file": os.path.join(args.tls, "ca.pem") if args.tls else None}
    write_private(os.path.join(state_dir, "provider.json"), json.dumps(info, indent=1))
    if args.ready_file:
        write_private(args.ready_file, str(port), 0o644)
    print(json.dumps(info), flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
