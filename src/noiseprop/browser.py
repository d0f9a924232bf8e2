"""Headless Chromium: print the study's report to PDF, and drive the report in tests.

:func:`find_chromium` finds the browser (``NOISEPROP_CHROMIUM``, else ``chromium``,
``chromium-browser``, ``google-chrome`` or ``google-chrome-stable`` on ``PATH``); :func:`print_pdf`
prints an HTML file to PDF; :class:`Chromium` is a small driver of the Chrome DevTools protocol for
everything else (open a page, collect its console errors and uncaught exceptions, evaluate JavaScript,
click, take screenshots).

The driver talks to the browser over a pipe (``--remote-debugging-pipe``: JSON messages separated by
NUL bytes on file descriptors 3 and 4 of the browser), so it needs nothing beyond the standard
library and opens no network port. Every browser gets a new temporary profile
(``--user-data-dir``), ``--no-sandbox`` only when running as root (Chromium's sandbox refuses root),
a time limit on every wait, and is killed with its child processes when closed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "BROWSER_NAMES",
    "BrowserError",
    "BrowserNotFoundError",
    "BrowserTimeoutError",
    "Chromium",
    "Page",
    "find_chromium",
    "print_pdf",
]

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables looked for on ``PATH``, in this order, when ``NOISEPROP_CHROMIUM`` is not set."""

ENVIRONMENT_VARIABLE = "NOISEPROP_CHROMIUM"
"""Environment variable naming the browser executable (a path, or a name on ``PATH``)."""

INSTALL_HINT = (
    f"apt-get install chromium, or set {ENVIRONMENT_VARIABLE} to a Chromium or Chrome executable"
)
"""How to get a browser, for the error messages."""

DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for any one wait on the browser (a reply, a page load)."""

_COMMAND_FD, _REPLY_FD = 3, 4
"""The browser's file descriptors of ``--remote-debugging-pipe``: it reads commands on 3, writes on 4."""

_KEPT_EVENTS = 1000
"""Most unclaimed protocol events kept for :meth:`Chromium.wait_for_event` (older ones are dropped)."""


class BrowserError(RuntimeError):
    """The browser failed: it did not start, exited, or answered a command with an error."""


class BrowserNotFoundError(FileNotFoundError):
    """No Chromium or Chrome executable was found."""


class BrowserTimeoutError(BrowserError, TimeoutError):
    """The browser did not answer within the time allowed."""


# ------------------------------------------------------------------------------------ finding it
def find_chromium() -> Path:
    """The browser executable: ``NOISEPROP_CHROMIUM`` if set (a path, or a name on ``PATH``), else
    the first of :data:`BROWSER_NAMES` on ``PATH``.

    Raises:
        BrowserNotFoundError: ``NOISEPROP_CHROMIUM`` names no executable, or none of the names is on
            ``PATH``; the message says how to install one.
    """
    chosen = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise BrowserNotFoundError(
                f"{ENVIRONMENT_VARIABLE} must name a Chromium or Chrome executable (a path, or a name "
                f"on PATH); got {chosen!r}, which is not an executable file."
            )
        return Path(found)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    raise BrowserNotFoundError(
        f"no Chromium found (looked for {', '.join(BROWSER_NAMES)} on PATH): {INSTALL_HINT}."
    )


def browser_arguments(profile: Path) -> list[str]:
    """Command-line switches of a headless browser driven over a pipe, with ``profile`` as its
    user-data-dir; ``--no-sandbox`` only when running as root."""
    arguments = [
        "--headless",
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
        "--window-size=1280,1024",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        arguments.append("--no-sandbox")
    return [*arguments, "about:blank"]


# ------------------------------------------------------------------------------------ the driver
class Chromium:
    """A headless Chromium driven over the DevTools protocol; use it as a context manager.

    Args:
        executable: the browser (default :func:`find_chromium`).
        timeout: seconds allowed for each wait (a command's reply, a page load).

    Example (not run here: it needs a browser)::

        with Chromium() as browser:
            page = browser.open("report.html")
            assert not page.problems
            title = page.evaluate("document.title")
    """

    def __init__(self, executable: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0; got {timeout!r}.")
        self.executable = Path(executable) if executable is not None else find_chromium()
        self.timeout = float(timeout)
        self._pid: int | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = None
        self._command_fd = self._reply_fd = -1
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._pages: dict[str, Page] = {}

    # --------------------------------------------------------------------------- life cycle
    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Chromium:
        """Start the browser with a new temporary profile; wait until it answers."""
        import fcntl

        if self._pid is not None:
            raise BrowserError("this Chromium is already started; close it first.")
        self._profile = tempfile.TemporaryDirectory(prefix="noiseprop-chromium-")
        profile = Path(self._profile.name)
        self._log = tempfile.TemporaryFile(prefix="noiseprop-chromium-log-")  # noqa: SIM115 - close()
        command_read, self._command_fd = os.pipe()
        self._reply_fd, reply_write = os.pipe()
        # the browser's ends, moved above 9 so that putting them on 3 and 4 in the browser never
        # overwrites one with the other (every descriptor here is close-on-exec: none leaks into it)
        ends = (self._log.fileno(), command_read, reply_write)
        sources = [fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, 10) for descriptor in ends]
        os.close(command_read)
        os.close(reply_write)
        log, command, reply = sources
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
            (os.POSIX_SPAWN_DUP2, command, _COMMAND_FD),
            (os.POSIX_SPAWN_DUP2, reply, _REPLY_FD),
        ]
        arguments = [str(self.executable), *browser_arguments(profile)]
        try:
            # posix_spawn, not subprocess with a preexec_fn: safe while other threads run
            self._pid = os.posix_spawn(arguments[0], arguments, os.environ, file_actions=actions,
                                       setsid=True)  # fmt: skip
        except OSError as error:
            self.close()
            raise BrowserError(f"could not start the browser {arguments[0]!r}: {error}") from error
        finally:
            for descriptor in sources:
                os.close(descriptor)
        os.set_blocking(self._reply_fd, False)
        try:
            self.call("Browser.getVersion")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Ask the browser to quit, kill it and its child processes if it has not within 5 s, and
        remove its temporary profile. Safe to call more than once."""
        pid, self._pid = self._pid, None
        if pid is not None:
            if not _has_exited(pid) and self._command_fd >= 0:
                with contextlib.suppress(OSError):
                    self._write({"id": self._new_id(), "method": "Browser.close"})
            deadline = time.monotonic() + 5.0
            while not _has_exited(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            # the browser is not reaped yet, so its process group's id is still ours to kill
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the whole group: renderers, crash handler, browser
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for descriptor in (self._command_fd, self._reply_fd):
            if descriptor >= 0:
                with contextlib.suppress(OSError):
                    os.close(descriptor)
        self._command_fd = self._reply_fd = -1
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._profile is not None:
            shutil.rmtree(self._profile.name, ignore_errors=True)
            self._profile = None
        self._buffer = b""
        self._pages.clear()
        self._events.clear()

    # ----------------------------------------------------------------------------- protocol
    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send the DevTools command ``method`` (to the page of ``session``, or to the browser) and
        return its result; events that arrive meanwhile are kept (see :meth:`wait_for_event`).

        Raises:
            BrowserError: the browser answered with an error, or exited.
            BrowserTimeoutError: no answer within ``timeout`` seconds (default: the browser's).
        """
        identifier = self._new_id()
        message: dict[str, Any] = {"id": identifier, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._receive(deadline, waiting_for=f"the reply to {method}")
            if reply.get("id") != identifier:
                continue
            if "error" in reply:
                error = reply["error"]
                raise BrowserError(f"{method} failed: {error.get('message')} ({error.get('data', '')})")
            return reply.get("result", {})

    def wait_for_event(
        self, method: str, *, session: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait for the event ``method`` (of the page of ``session``, if given) and return its
        parameters; an event that already arrived and was not yet claimed counts.

        Raises:
            BrowserTimeoutError: none within ``timeout`` seconds (default: the browser's).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    del self._events[index]
                    return event.get("params", {})
            self._receive(deadline, waiting_for=f"the event {method}")

    def discard_events(self, session: str | None = None) -> None:
        """Forget the unclaimed events (of the page of ``session``, if given)."""
        self._events = [e for e in self._events if session is not None and e.get("sessionId") != session]

    def open(self, location: str | Path, *, timeout: float | None = None) -> Page:
        """A new tab showing ``location`` (a file path, or a URL), once its load event has fired;
        its console errors and uncaught exceptions are collected from the start in ``Page.problems``."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        page.goto(location, timeout=timeout)
        return page

    # ------------------------------------------------------------------------------ plumbing
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        """Write one message on the browser's command pipe; a browser that is gone is an error."""
        if self._pid is None or self._command_fd < 0:
            raise BrowserError("the browser is not running; start it first (use Chromium as `with`).")
        try:
            self._write(message)
        except BrokenPipeError:
            raise BrowserError(f"the browser exited{self._log_tail()}") from None

    def _write(self, message: dict[str, Any]) -> None:
        """Write one message, NUL-terminated, on the command pipe."""
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._command_fd, data) :]

    def _receive(self, deadline: float, *, waiting_for: str) -> dict[str, Any]:
        """Read the next message; keep events (noting console problems on their page) and return it."""
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserTimeoutError(f"no answer from the browser while waiting for {waiting_for}.")
            readable, _, _ = select.select([self._reply_fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._reply_fd, 1 << 20)
            if not chunk:
                raise BrowserError(
                    f"the browser exited while we waited for {waiting_for}{self._log_tail()}"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            page = self._pages.get(message.get("sessionId", ""))
            if page is not None:
                page._note(message["method"], message.get("params", {}))
            self._events.append(message)
            del self._events[:-_KEPT_EVENTS]
        return message

    def _log_tail(self) -> str:
        """The last lines the browser printed, for error messages."""
        if self._log is None:
            return ""
        size = os.fstat(self._log.fileno()).st_size
        # pread, not seek and read: the browser writes through the same file offset
        text = os.pread(self._log.fileno(), 4096, max(0, size - 4096)).decode(errors="replace")
        lines = text.strip().splitlines()[-8:]
        return (" (its last output: " + " | ".join(lines) + ")") if lines else ""


def _has_exited(pid: int) -> bool:
    """Whether our child process ``pid`` has exited; it is not reaped (its process id, and so its
    process group's, stays ours until :meth:`Chromium.close` kills the group and reaps it)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class Page:
    """One tab of a :class:`Chromium` (from :meth:`Chromium.open`).

    Attributes:
        problems: the page's console errors (``console.error``, failed assertions, errors the browser
            logs such as a resource that failed to load) and uncaught exceptions, one line each, in
            the order they happened.
    """

    def __init__(self, browser: Chromium, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session
        self.problems: list[str] = []

    def call(self, method: str, params: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """Send a DevTools command to this page (see :meth:`Chromium.call`)."""
        return self.browser.call(method, params, session=self.session, **options)

    def goto(self, location: str | Path, *, timeout: float | None = None) -> None:
        """Show ``location`` (a file path, or a URL such as ``file:///...`` or ``about:blank``) and
        wait for its load event and two animation frames (for what scripts draw at load)."""
        text = str(location)
        url = text if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]+:", text) else Path(text).resolve().as_uri()
        self.browser.discard_events(self.session)
        navigation = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if navigation.get("errorText"):
            raise BrowserError(f"could not open {url}: {navigation['errorText']}")
        self.browser.wait_for_event("Page.loadEventFired", session=self.session, timeout=timeout)
        self.evaluate(
            "document.fonts.ready.then(() => new Promise(done => "
            "requestAnimationFrame(() => requestAnimationFrame(() => done(true)))))",
            timeout=timeout,
        )

    def evaluate(self, expression: str, *, timeout: float | None = None) -> Any:
        """The value of the JavaScript ``expression`` in the page (a promise is awaited), as JSON data.

        Raises:
            BrowserError: the expression threw; the message holds the JavaScript error.
        """
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True},
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            raise BrowserError(
                f"JavaScript error in {expression!r}: {_exception_text(reply['exceptionDetails'])}"
            )
        return reply["result"].get("value")

    def box(self, selector: str) -> dict[str, float]:
        """``{x, y, width, height}`` of the first element matching the CSS ``selector``, in page
        coordinates, after scrolling it into view.

        Raises:
            BrowserError: no element matches ``selector``.
        """
        found = self.evaluate(
            f"(() => {{ const element = document.querySelector({json.dumps(selector)});"
            " if (!element) return null; element.scrollIntoView({block: 'center', inline: 'center'});"
            " const r = element.getBoundingClientRect();"
            " return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width,"
            " height: r.height, left: r.left, top: r.top}; })()"
        )
        if found is None:
            raise BrowserError(f"selector {selector!r} matches no element of the page.")
        return found

    def click(self, selector: str) -> None:
        """Click (a real mouse press and release, left button) the middle of the first element matching
        the CSS ``selector``."""
        box = self.box(selector)
        x, y = box["left"] + box["width"] / 2, box["top"] + box["height"] / 2
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
            )

    def screenshot(self, selector: str | None = None) -> bytes:
        """A PNG of the first element matching the CSS ``selector`` (default: the viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.box(selector)
            if box["width"] <= 0 or box["height"] <= 0:
                raise BrowserError(f"selector {selector!r} matches an element of size zero.")
            params["clip"] = {key: box[key] for key in ("x", "y", "width", "height")} | {"scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def pdf(self) -> bytes:
        """The page printed to PDF (backgrounds printed, no header or footer)."""
        reply = self.call("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True})
        return base64.b64decode(reply["data"])

    def _note(self, method: str, params: dict[str, Any]) -> None:
        """Record a console error or an uncaught exception from the protocol event ``method``."""
        if method == "Runtime.exceptionThrown":
            self.problems.append(f"uncaught exception: {_exception_text(params['exceptionDetails'])}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_text(argument) for argument in params.get("args", []))
            self.problems.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.problems.append(
                f"browser {entry.get('source', 'log')} error: {entry.get('text')}{where}"
            )


def _remote_text(value: dict[str, Any]) -> str:
    """A DevTools RemoteObject (a console argument) as text."""
    if "value" in value:
        return str(value["value"])
    return str(value.get("description", value.get("type", "?")))


def _exception_text(details: dict[str, Any]) -> str:
    """A DevTools ExceptionDetails as one line: the error and where it was thrown."""
    exception = details.get("exception") or {}
    text = exception.get("description") or details.get("text", "exception")
    where = f" at {details['url']}:{details.get('lineNumber', 0) + 1}" if details.get("url") else ""
    return text.splitlines()[0] + where if text else where


# ---------------------------------------------------------------------------------------- PDF
def print_pdf(
    html_path: str | Path,
    pdf_path: str | Path,
    *,
    executable: str | Path | None = None,
    timeout: float = 60.0,
) -> Path:
    """Print the HTML file ``html_path`` to the PDF file ``pdf_path`` with headless Chromium.

    Args:
        html_path: the page (its images and styles load as in a browser).
        pdf_path: where to write the PDF (its folder must exist).
        executable: the browser (default :func:`find_chromium`).
        timeout: seconds allowed for each step (start, load, print).

    Returns:
        ``pdf_path``, as a Path.

    Raises:
        FileNotFoundError: ``html_path`` is not a file.
        BrowserNotFoundError: no browser (the message says how to install one).
        BrowserError: the browser failed or timed out.
    """
    source, target = Path(html_path), Path(pdf_path)
    if not source.is_file():
        raise FileNotFoundError(
            f"html_path must be an HTML file; got {str(source)!r}, which is not a file."
        )
    with Chromium(executable, timeout=timeout) as browser:
        document = browser.open(source).pdf()
    if not document.startswith(b"%PDF"):
        raise BrowserError(f"the browser returned no PDF for {str(source)!r}.")
    target.write_bytes(document)
    return target
