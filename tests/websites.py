"""A website on 127.0.0.1 for the link preview tests: pages a test writes, requests counted, and
gated pages that answer only once the test lets them (test_previews, test_previews_page)."""

import collections
import contextlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


class Site:
    """An HTTP server on 127.0.0.1 serving ``pages`` (path -> status, headers, body), counting
    requests; a path in ``gates`` answers once its event is set."""

    def __init__(self):
        self.pages = {}
        self.hits = collections.Counter()
        self.gates = {}
        self.asked = collections.defaultdict(threading.Event)
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path
                with site.lock:
                    site.hits[path] += 1
                site.asked[path].set()
                if path in site.gates:
                    site.gates[path].wait(15)
                status, headers, body = site.pages.get(path, (404, {}, b"no"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # The guard hung up (too large, too slow).
                    self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,))

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def html(self, path, head, status=200, content_type="text/html; charset=utf-8"):
        self.pages[path] = (status, {"Content-Type": content_type}, head.encode())


def og_page(title="Léa's page", description="All about it", image="/image.jpg", site_name="Lea"):
    """An HTML page with OpenGraph tags."""
    return (
        "<!doctype html><html><head>"
        f'<meta property="og:title" content="{title}">'
        f'<meta property="og:description" content="{description}">'
        f'<meta property="og:site_name" content="{site_name}">'
        f'<meta property="og:image" content="{image}">'
        "<title>Fallback</title></head><body><p>Hello</p></body></html>"
    )


def jpeg_with_exif():
    """A JPEG whose EXIF names a camera and a place: what must never be served."""
    image = Image.new("RGB", (600, 400), (200, 40, 90))
    exif = Image.Exif()
    exif[0x010F] = "SecretCamMaker"  # Make
    exif[0x0131] = "SecretSoftware"  # Software
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


@contextlib.contextmanager
def serving():
    """A running ``Site`` with an OpenGraph page at /page and its JPEG (with EXIF) at /image.jpg."""
    site = Site()
    site.thread.start()
    site.html("/page", og_page())
    site.pages["/image.jpg"] = (200, {"Content-Type": "image/jpeg"}, jpeg_with_exif())
    try:
        yield site
    finally:
        for gate in site.gates.values():
            gate.set()
        site.server.shutdown()
        site.server.server_close()
        site.thread.join(5)
