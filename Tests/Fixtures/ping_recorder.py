#!/usr/bin/env python3
"""A Healthchecks ping endpoint for tests: answers like a real Healthchecks server and records every ping.

Usage: ping_recorder.py RECORD_FILE [--port N] [--body-limit N] [--delay SECONDS] [--status CODE]
                        [--ready-file PATH] [--tls DIR]

Listens on 127.0.0.1 only (port 0 = any free port; the chosen port is written to --ready-file).
Each request is appended to RECORD_FILE as one JSON line:
  {"method", "path", "query", "body", "time"}
Answers as Healthchecks does (docs/design.md#healthchecks): "OK" with a `Ping-Body-Limit` header; a path that is
not /<uuid>[/start|/fail|/log|/<0-255>] or /<ping-key>/<slug>[...] gets 404; a bad `rid` or an exit
status over 255 gets 400; a body over the limit is cut silently (as the server does).
--delay makes every answer slow; --status forces an HTTP status (to test retries).
--tls DIR serves HTTPS with DIR/server.pem and DIR/server-key.pem (made by test_ca.py DIR; clients trust DIR/ca.pem).
A TLS handshake that fails (a client that does not trust the CA) is not a ping and is not recorded.
"""
import argparse
import json
import os
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SUFFIX_RE = r"(?:/(start|fail|log|\d+))?"
PATH_RE = re.compile(r"^(?:/ping)?(?:/(" + UUID_RE + r")|/([A-Za-z0-9_-]{22})/([a-z0-9-]+))" + SUFFIX_RE + r"/?$")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("record")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--body-limit", type=int, default=10000)
    parser.add_argument("--delay", type=float, default=0)
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--tls", metavar="DIR")
    args = parser.parse_args()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_any(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            entry = {"method": method, "path": parts.path, "query": {k: v[0] for k, v in query.items()},
                     "body": body.decode("utf-8", "replace"), "body_bytes": len(body), "time": time.time()}
            with lock, open(args.record, "a") as f:
                f.write(json.dumps(entry) + "\n")
            if args.delay:
                time.sleep(args.delay)
            status, text = self.decide(parts.path, query, len(body))
            payload = text.encode()
            self.send_response(status)
            self.send_header("Ping-Body-Limit", str(args.body_limit))
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def decide(self, path, query, body_length):
            if args.status:
                return args.status, "forced"
            match = PATH_RE.match(path)
            if not match:
                return 404, "not found"
            suffix = match.group(4)
            if suffix and suffix.isdigit() and int(suffix) > 255:
                return 400, "invalid url format"
            rid = query.get("rid", [None])[0]
            if rid is not None:
                try:
                    if str(uuid.UUID(rid)) != rid:
                        raise ValueError
                except ValueError:
                    return 400, "invalid uuid format"
            if body_length > 2_500_000:
                return 400, "request body too large"
            if match.group(2) and query.get("create", ["0"])[0] == "1":
                return 201, "Created"
            return 200, "OK"

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_HEAD(self):
            self.handle_any("HEAD")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(args.tls, "server.pem"), os.path.join(args.tls, "server-key.pem"))
        # The handshake happens in the request's thread (not in accept), so a client that refuses the
        # certificate cannot stall the server for the others.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

        def handshake_then_handle(request, client_address, finish=ThreadingHTTPServer.finish_request):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
            finish(server, request, client_address)

        server.finish_request = handshake_then_handle
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(args.ready_file + ".tmp", args.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
