"""Look at the built documentation site the way a reader does: served over HTTP, opened in headless Chromium.

    mkdocs build --strict && python docs/screenshot.py        # checks, then PNGs in build/docs-shots/
    python docs/screenshot.py --site site --out DIR --chromium /usr/bin/chromium

It serves ``site/`` on 127.0.0.1 (a free port) and checks over HTTP that the search index
(search/search_index.json) has every page and every model, that the models page has the table with every
model, and that the home page shows the set-up commands. Then, when Chromium is installed, it opens the home
page, one attention module's page and a search for "gate" in a fresh headless Chromium (driven over its
DevTools pipe, so it can wait for the search to answer), checks what the browser shows (the table of a module
page, the search's results), and saves a screenshot of each. Exit 1 on any failed check.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
WIDTH, HEIGHT = 1280, 1000
REPLY_TIMEOUT = 60  # seconds for one DevTools reply
PAGES = ["", "quickstart/", "models/", "attention/gct/", "training/", "weights/", "benchmarks/", "cli/",
         "reference/"]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


def serve(site: Path) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def visible_text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def check_site(base: str) -> list[str]:
    """What is wrong with the served site, as readable lines (empty: all good)."""
    from attnzoo import list_models

    problems = []
    models = list_models()
    index = json.loads(fetch(base + "search/search_index.json"))
    docs = index.get("docs", [])
    indexed_pages = {doc["location"].split("#")[0] for doc in docs}
    problems += [f"search index: no entry for the page {page or 'home'!r}" for page in PAGES if page not in indexed_pages]
    models_text = " ".join(doc.get("text", "") for doc in docs if doc["location"].startswith("models/"))
    missing = [name for name in models if name not in models_text]
    if missing:
        problems.append(f"search index: the models page does not index {', '.join(missing)}")
    models_page = fetch(base + "models/")
    rows = [name for name in models if f"<td><code>{name}</code></td>" in models_page]
    if len(rows) != len(models):
        problems.append(f"models page: the table has {len(rows)} of the {len(models)} models")
    if "attnzoo fit --config configs/quickstart.yaml" not in visible_text(fetch(base)):
        problems.append("home page: the set-up commands are missing")
    print(f"search index: {len(docs)} entries over {len(indexed_pages)} pages; models table: {len(rows)} rows")
    return problems


class Chromium:
    """A headless Chromium driven over the DevTools protocol on fds 3 and 4 (``--remote-debugging-pipe``)."""

    def __init__(self, executable: str, profile: str):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipe_fds():  # the protocol's fixed descriptors: the browser reads 3, writes 4
            # Lift both above 4 first, so neither overwrites the other if one of them already is 3 or 4.
            reads, writes = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=pipe_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # events arrive between the replies; this tool needs none of them
            while b"\0" not in self._buffer:
                if not select.select([self._from_browser], [], [], REPLY_TIMEOUT)[0]:
                    raise RuntimeError(f"chromium did not answer {method} within {REPLY_TIMEOUT} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.process.wait()}) during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, ready: str = "true", timeout: float = 60) -> bool:
        """Navigate and wait until the page has loaded and the JS expression ``ready`` is truthy."""
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"document.readyState === 'complete' && Boolean({ready})"):
                time.sleep(0.5)  # let the last layout (fonts, highlighted code) settle before the picture
                return True
            time.sleep(0.25)
        return False

    def screenshot(self, png: Path) -> None:
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


def not_blank(png: Path) -> str | None:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    return f"{png.name}: {len(colours)} colours, a blank page" if colours is not None and len(colours) < 16 else None


def browse(chromium: str, base: str, out: Path) -> list[str]:
    """Open the pages in Chromium, check what it shows, save the screenshots; return the problems."""
    problems = []
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="attnzoo-chromium-") as profile:
        browser = Chromium(chromium, profile)
        try:
            shots = [
                ("home.png", "", "document.querySelector('.md-search__input') !== null", None),
                ("attention-gct.png", "attention/gct/", "document.querySelector('table') !== null",
                 "document.querySelectorAll('table tbody tr').length + ' rows in the cost table, title: ' + "
                 "document.querySelector('h1').firstChild.textContent"),
                # Material opens its search with ?q=; the result list fills in once the search worker has
                # loaded search_index.json, so this waits for real results, not the "Initializing" line.
                ("search-gate.png", "?q=gate", "document.querySelectorAll('.md-search-result__item').length > 0",
                 "document.querySelector('.md-search-result__meta').textContent + ': ' + "
                 "[...document.querySelectorAll('.md-search-result__item h1')].slice(0, 5)"
                 ".map(e => e.textContent.trim()).join(' | ')"),
            ]
            for name, path, ready, report in shots:
                if not browser.open(base + path, ready):
                    problems.append(f"{base + path}: not ready after 60 s ({ready})")
                    continue
                browser.screenshot(out / name)
                problem = not_blank(out / name)
                if problem:
                    problems.append(problem)
                shown = browser.evaluate(report) if report else browser.evaluate("document.title")
                print(f"{out / name}: {shown}")
        finally:
            browser.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site (mkdocs build)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs-shots", help="where the PNGs go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="the browser (default: chromium on PATH; without one, the HTTP checks only)")
    args = parser.parse_args()
    if not (args.site / "index.html").is_file():
        print(f"no built site in {args.site}: run `mkdocs build --strict` first", file=sys.stderr)
        return 1
    server, base = serve(args.site)
    try:
        problems = check_site(base)
        if args.chromium:
            problems += browse(args.chromium, base, args.out)
        else:
            print("no chromium found: the site was checked over HTTP, no screenshots taken")
    finally:
        server.shutdown()
    for problem in problems:
        print("FAILED:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
