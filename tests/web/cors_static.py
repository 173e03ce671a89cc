#!/usr/bin/env python3
"""Tiny static HTTP server with CORS, for testing tests/web/play.mjs without castgate.

Serves DIR on 127.0.0.1 (port 0 = pick a free one) and prints
``PORT <n>`` on stdout once it is listening, so a caller can wait for that
line instead of sleeping.

CORS: the request's ``Origin`` is echoed back together with
``Access-Control-Allow-Credentials: true`` (``*`` when there is no Origin), so
both plain and ``withCredentials`` XHRs from another origin are allowed.

``--set-cookie NAME`` sets ``NAME=<random>; Path=/`` on every response to a
request that did not carry that cookie (a stand-in for a sticky-session
cookie). ``--log FILE`` appends one JSON line per request:
``{"path", "origin", "cookie"}``, where ``cookie`` is the value of NAME the
request carried (or null). ``--no-cors`` sends no CORS headers at all, to
see a cross-origin player fail.

Only for tests: no range requests, no directory listings, no caching.
"""

import argparse
import http.cookies
import json
import os
import secrets
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}


def make_handler(root, cookie_name, log_file, log_lock, no_cors=False):
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, fmt, *args):  # keep stderr quiet
            pass

        def _cookie(self):
            if not cookie_name:
                return None
            jar = http.cookies.SimpleCookie()
            try:
                jar.load(self.headers.get("Cookie", ""))
            except http.cookies.CookieError:
                return None
            morsel = jar.get(cookie_name)
            return morsel.value if morsel else None

        def _common_headers(self, cookie):
            origin = self.headers.get("Origin")
            if origin and not no_cors:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Vary", "Origin")
            elif not no_cors:
                self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cache-Control", "no-cache, no-store")
            if cookie_name and cookie is None:
                self.send_header(
                    "Set-Cookie", f"{cookie_name}={secrets.token_hex(8)}; Path=/"
                )

        def _log(self, cookie):
            if not log_file:
                return
            line = json.dumps(
                {
                    "path": urlsplit(self.path).path,
                    "origin": self.headers.get("Origin"),
                    "cookie": cookie,
                }
            )
            with log_lock:
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(line + "\n")

        def do_OPTIONS(self):
            cookie = self._cookie()
            self._log(cookie)
            self.send_response(204)
            self._common_headers(cookie)
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            req_headers = self.headers.get("Access-Control-Request-Headers")
            if req_headers:
                self.send_header("Access-Control-Allow-Headers", req_headers)
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head):
            cookie = self._cookie()
            self._log(cookie)
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            full = os.path.realpath(os.path.join(root, rel))
            if not (full == root or full.startswith(root + os.sep)) or not os.path.isfile(full):
                body = b"not found\n"
                self.send_response(404)
                self._common_headers(cookie)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            try:
                with open(full, "rb") as f:
                    data = f.read()
            except OSError:  # e.g. deleted by ffmpeg between isfile and open
                self.send_error(404)
                return
            ext = os.path.splitext(full)[1].lower()
            self.send_response(200)
            self._common_headers(cookie)
            self.send_header("Content-Type", TYPES.get(ext, "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="directory to serve")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free one)")
    ap.add_argument("--set-cookie", metavar="NAME", help="set cookie NAME when a request lacks it")
    ap.add_argument("--log", metavar="FILE", help="append one JSON line per request to FILE")
    ap.add_argument("--no-cors", action="store_true", help="send no CORS headers (to see a player fail)")
    args = ap.parse_args()

    root = os.path.realpath(args.dir)
    handler = make_handler(root, args.set_cookie, args.log, threading.Lock(), args.no_cors)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
