"""A loopback HTTP file server that honours Range and counts every byte it sends.

Stage: benchmarks (not part of vkrama). Run as its own process
(`python -m benchmarks.loopback ROOT PORT_FILE [BYTES_PER_S]`) so that serving never
competes with the harness for the GIL. Files go out with sendfile(2) in 1 MiB steps, fast
enough that the client, not the server, sets the pace; with BYTES_PER_S each connection is
held to that rate, as hubs and CDNs cap each connection. `GET /_log` returns the requests
served so far as JSON (`?reset=1` clears them). Must serve nothing outside ROOT and only on
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STEP = 1 << 20


class Handler(BaseHTTPRequestHandler):
    root: Path
    served: list[dict[str, object]]
    rate: float | None = None  # bytes per second and connection; None: no cap
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the log is /_log

    def do_GET(self) -> None:
        if self.path.startswith("/_log"):
            with self.lock:
                body = json.dumps(self.served).encode()
                if "reset=1" in self.path:
                    self.served.clear()
            self._answer(200, body, "application/json")
            return
        path = (self.root / self.path.lstrip("/").split("?")[0]).resolve()
        if self.root not in path.parents or not path.is_file():
            self._answer(404, b"not found\n", "text/plain")
            return
        self._send_file(path)

    def do_HEAD(self) -> None:
        path = (self.root / self.path.lstrip("/")).resolve()
        if self.root not in path.parents or not path.is_file():
            self._answer(404, b"", "text/plain")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, path: Path) -> None:
        began = time.time()  # wall clock: the harness compares it with its own
        size = path.stat().st_size
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(path, began, start, 0, 416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        sent = 0
        step = STEP if self.rate is None else max(1 << 16, min(STEP, int(self.rate / 50)))
        paced = time.monotonic()
        try:
            with open(path, "rb") as source:
                while start + sent <= end:
                    count = min(step, end + 1 - start - sent)
                    sent += self.connection.sendfile(source, start + sent, count)
                    if self.rate is not None:  # hold the connection to its rate
                        time.sleep(max(0.0, paced + sent / self.rate - time.monotonic()))
        except OSError:
            pass  # the client went away (killed on purpose): what was sent is recorded
        finally:
            self._record(path, began, start, sent, 206 if match else 200)

    def _record(self, path: Path, began: float, start: int, sent: int, status: int) -> None:
        # A killed client's request is recorded when its send fails, which can be after the
        # next request began: `began` tells them apart.
        entry = {"path": path.name, "began": began, "start": start, "sent": sent, "status": status}
        with self.lock:
            self.served.append(entry)


def main(argv: list[str]) -> int:
    root, port_file = Path(argv[0]).resolve(), Path(argv[1])
    Handler.root = root
    Handler.rate = float(argv[2]) if len(argv) > 2 else None
    Handler.served = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, port_file)  # the parent waits for this file
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
