#!/usr/bin/env python3
"""An http-mode function for faasgate's watchdog: echoes each request as JSON.

Needs only the Python 3 standard library. It listens on the host and port of `upstream_url`
(default http://127.0.0.1:5000), the variable the watchdog both reads and passes down to its
child, so the watchdog and this server always agree on the port.

Response: {"method", "path", "query", "headers", "body", "body_bytes"}; `body` is decoded as
UTF-8 with invalid bytes replaced, `body_bytes` is the exact length received.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_UPSTREAM = "http://127.0.0.1:5000"


class Echo(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive so the watchdog can reuse them.
    protocol_version = "HTTP/1.1"
    server_version = "echo"

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _echo(self):
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "malformed chunked body")
            return
        parts = urlsplit(self.path)
        payload = json.dumps(
            {
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "headers": {k: v for k, v in self.headers.items()},
                "body": body.decode("utf-8", errors="replace"),
                "body_bytes": len(body),
            },
            indent=2,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format, *args):
        # One line per request would drown the watchdog's logs under load.
        pass


def main():
    url = os.environ.get("upstream_url") or os.environ.get("http_upstream_url") or DEFAULT_UPSTREAM
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5000
    ThreadingHTTPServer.request_queue_size = 256
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((host, port), Echo)
    # Exit promptly when the watchdog stops us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo listening on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
