"""One way to run a test's HTTP server: in a daemon thread, shut down and closed on exit."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def running(httpd: http.server.ThreadingHTTPServer) -> Iterator[int]:
    """Serve ``httpd`` in a thread until the block ends; yield its port."""
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
