"""A data mirror on 127.0.0.1 for download tests: `http.server` in a thread, serving a folder laid out like
$QKV_DATA_DIR (``<dataset>/<file>``), so ``QKV_DATA_URL=server.url`` makes `qkv data get` download from it.

Faults, per served path (``"tiny/input.bin"``), for the ways a download goes wrong:
- ``"truncate"``: the headers announce the whole file, half of it is sent, then the connection closes;
- ``"die"``: half the file is sent, then the server stops for good and the connection is reset (what a killed
  server looks like to the client: nothing answers afterwards either);
- ``"stall"``: half the file is sent, then nothing more until the client gives up (or 10 s pass).

Only loopback, only the given folder; every wait is bounded.

    with DataServer(folder, faults={"tiny/input.bin": "truncate"}) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
"""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULTS = ("truncate", "die", "stall")


class DataServer:
    def __init__(self, folder: str | Path, faults: dict[str, str] | None = None):
        self.folder = Path(folder).resolve()
        self.faults = dict(faults or {})
        assert set(self.faults.values()) <= set(FAULTS), self.faults
        self.requests: list[str] = []  # paths asked for, in order
        self._release = threading.Event()  # ends a stall
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""  # http://127.0.0.1:PORT once started (kept after it stops: the address that refuses)

    def __enter__(self) -> DataServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.stop()

    def stop(self) -> None:
        """Stop answering (idempotent): the listening socket is closed, later connections are refused."""
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()
            self._thread.join(timeout=10)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                rel = self.path.lstrip("/")
                server.requests.append(rel)
                path = (server.folder / rel).resolve()
                if server.folder not in path.parents or not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                fault = server.faults.get(rel)
                if fault is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if fault == "stall":
                    server._release.wait(timeout=10)
                elif fault == "die":
                    # SO_LINGER 0: close with a reset, as the kernel does for a killed process with unsent data
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    threading.Thread(target=server.stop, daemon=True).start()
                self.close_connection = True
                if fault == "die":
                    self.connection.close()

        return Handler
