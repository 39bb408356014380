"""A real browser for the e2e tests: headless Chromium (Debian's `chromium` package) driven over the Chrome DevTools
Protocol on a pipe (--remote-debugging-pipe: JSON messages separated by NUL on fds 3 and 4), standard library only.

    with Browser() as b:
        b.open("http://127.0.0.1:6006/#scalars")
        text = b.wait_for_text(lambda t: "site-1" in t, timeout=120)
        b.screenshot("page.png")

`text()` is what the page renders, shadow roots included (TensorBoard draws its dashboards in web components).
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# innerText of the document and of every open shadow root under it, depth first.
DEEP_TEXT = """
(() => {
  const parts = [document.body ? document.body.innerText : ''];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (!el.shadowRoot) continue;
      for (const child of el.shadowRoot.children) {
        if (child.tagName !== 'STYLE' && child.tagName !== 'SCRIPT' && child.innerText) parts.push(child.innerText);
      }
      walk(el.shadowRoot);
    }
  };
  walk(document);
  return parts.join('\\n');
})()
"""


def find_chromium():
    return next((shutil.which(c) for c in CANDIDATES if shutil.which(c)), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000):
        self.binary = find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium: install Debian's package (apt-get install chromium)")
        self.size = (width, height)
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = None
        self.session = None
        self._id = 0
        self._buffer = b""

    def __enter__(self):
        import fcntl

        def high(fd: int) -> int:
            """The same pipe end on a descriptor above 9, so that the shell's 3<& and 4>& cannot overwrite it."""
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            return moved

        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        to_browser_r, from_browser_w = high(to_browser_r), high(from_browser_w)
        cmd = [self.binary, "--headless=new", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
               "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
               f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses root with its sandbox (CI runs as root)
        # Chromium reads commands from fd 3 and writes replies and events to fd 4: bash puts the pipes there (dash
        # cannot redirect descriptors above 9).
        shell = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.proc = subprocess.Popen(["bash", "-c", shell, *cmd], pass_fds=(to_browser_r, from_browser_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                try:
                    self.call("Browser.close", session=False, timeout=5)
                except BrowserError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, session: bool = True, timeout: float = 60, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise BrowserError("Chromium did not answer" + (f" (exited {self.proc.returncode})"
                                                                 if self.proc.poll() is not None else ""))
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str):
        """Load url afresh (a page that only changes its #fragment would not reload)."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression=DEEP_TEXT, returnByValue=True)
        return (result.get("result") or {}).get("value") or ""

    def wait_for_text(self, ready, timeout: float = 120, interval: float = 2) -> str:
        """The page's text once ready(text) holds and the text stopped changing (charts drawn: their axis labels
        are text too); BrowserError with the last text after timeout seconds."""
        deadline = time.monotonic() + timeout
        text = previous = None
        while time.monotonic() < deadline:
            text = self.text()
            if ready(text) and text == previous:
                return text
            previous = text
            time.sleep(interval)
        raise BrowserError(f"the page was not ready after {timeout:.0f}s; it showed: {(text or '')[:1500]!r}")

    def evaluate(self, expression: str):
        return (self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result") or {}) \
            .get("value")

    def screenshot(self, path: str) -> str:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path
