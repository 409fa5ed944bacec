"""A real JupyterLab for the notebook tests: a server on 127.0.0.1 with a token and private
settings, and Playwright driving Debian's Chromium (no browser download) to open notebooks, run
them through the Run menu, and read what the page shows."""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chromium import FLAGS, chromium_binary


@dataclass
class Lab:
    base: str
    token: str
    root: Path
    pid: int


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path) -> Iterator[Lab]:
    """Start JupyterLab serving `root`, with its runtime, data and settings under `home`; stop it
    by its process id when done."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        IPYTHONDIR=str(home / "ipython"),
    )
    # Every cell in the DOM (no windowing: a cell out of view would not be); no news prompt.
    settings = home / "settings" / "@jupyterlab"
    for extension, name, value in [
        (
            "notebook-extension",
            "tracker",
            '{"windowingMode": "none", "autoStartDefaultKernel": true}',
        ),
        ("apputils-extension", "notification", '{"fetchNews": "false"}'),
    ]:
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(value)
    log = open(home / "server.log", "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
            "--ServerApp.allow_remote_access=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            # window.jupyterapp, to ask whether the notebook's kernel is connected and idle
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={home / 'workspaces'}",
            f"--LabApp.user_settings_dir={home / 'settings'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (home / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not start in 60 s"
                time.sleep(0.3)
        yield Lab(base, token, root, server.pid)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@dataclass
class CellView:
    images: int
    canvases: int
    text: str
    visible_text: str


@dataclass
class NotebookView:
    cells: list[CellView]
    requests: list[str] = field(default_factory=list)
    bundle_runs: int = 0  # how many times the circuitsvis bundle was run on the page

    def outside_requests(self, base: str) -> list[str]:
        return [url for url in self.requests if not url.startswith((base, "data:", "blob:"))]


# The notebook on show: other tabs' cells stay in the DOM, hidden.
CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
CELLS_JS = (
    """() => [...document.querySelectorAll('%s .jp-CodeCell')].map((cell) => {
  const out = cell.querySelector('.jp-OutputArea');
  return {images: out ? out.querySelectorAll('img').length : 0,
          canvases: out ? out.querySelectorAll('canvas').length : 0,
          text: out ? out.textContent : '', visible_text: out ? out.innerText : ''};
})"""
    % CURRENT
)
PROMPTS_JS = (
    """() => [...document.querySelectorAll('%s .jp-CodeCell .jp-InputPrompt')]
  .map((prompt) => prompt.textContent).join(' ')"""
    % CURRENT
)
ALL_RAN_JS = (
    """() => [...document.querySelectorAll('%s .jp-CodeCell .jp-InputPrompt')]
  .every((prompt) => /\\[\\d+\\]/.test(prompt.textContent))"""
    % CURRENT
)


# The status bar says "Idle" before any kernel exists, and a Run All clicked then runs only the
# first cell once the kernel arrives: wait until the notebook's own kernel is connected and idle.
IDLE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const context = panel && panel.sessionContext;
  const kernel = context && context.session && context.session.kernel;
  return !!(context && context.isReady && kernel && kernel.connectionStatus === 'connected'
            && kernel.status === 'idle');
}"""


def wait_for(page, condition_js: str, seconds: float) -> None:
    """Wait until `condition_js` holds, accepting any dialog on the way (JupyterLab may still ask
    which kernel to start, even after showing the kernel as idle)."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(condition_js) or page.locator(".jp-Dialog").count():
        accept = page.locator(".jp-Dialog button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        if time.monotonic() > deadline:
            raise TimeoutError(condition_js)
        page.wait_for_timeout(500)


STARTED_JS = (
    """() => [...document.querySelectorAll('%s .jp-CodeCell .jp-InputPrompt')]
  .some((prompt) => /\\[(\\d+|\\*)\\]/.test(prompt.textContent))"""
    % CURRENT
)


def run_all(page, attempts: int = 5) -> None:
    """Run > Run All Cells, again if a late kernel dialog swallowed the click."""
    for _ in range(attempts):
        page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
        page.locator("li[data-command='runmenu:run-all']").click()
        try:
            wait_for(page, STARTED_JS, 20)
            return
        except TimeoutError:
            continue
    raise AssertionError("Run All Cells never started a cell")


def open_notebook(
    lab: Lab, name: str, *, run: bool, screenshot: Path | None = None
) -> NotebookView:
    """Open `name` in JupyterLab; with `run`, run all cells from the Run menu and wait for every
    code cell to finish. Returns each code cell's outputs as the page shows them."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_binary(), args=FLAGS[1:])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            # Count how often the bundle defines the global CircuitsVis.
            page.add_init_script(
                "window.mechlabBundleRuns = 0; Object.defineProperty(window, 'CircuitsVis', "
                "{configurable: true, get() { return this._cv; }, "
                "set(value) { window.mechlabBundleRuns += 1; this._cv = value; }});"
            )
            # A workspace of its own, reset: only this notebook opens, no tab is restored.
            workspace = secrets.token_hex(4)
            page.goto(f"{lab.base}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}")
            page.wait_for_selector(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell", timeout=90_000
            )
            wait_for(page, IDLE_JS, 90)
            if run:
                run_all(page)
                try:
                    wait_for(page, ALL_RAN_JS, 300)
                except TimeoutError:
                    page.screenshot(path=str(lab.root / "timeout.png"))
                    prompts = page.evaluate(PROMPTS_JS)
                    cells = page.evaluate(CELLS_JS)
                    raise AssertionError(f"cells did not all run: {prompts} {cells}") from None
            page.wait_for_timeout(3000)  # views render asynchronously once their cell is done
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            cells = [CellView(**cell) for cell in page.evaluate(CELLS_JS)]
            bundle_runs = page.evaluate("window.mechlabBundleRuns")
        finally:
            browser.close()
    return NotebookView(cells, requests, bundle_runs)
