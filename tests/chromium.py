"""Render a local HTML file in real headless Chromium (Debian's package) and report what it did:
the DOM after scripts ran, its text, and every network request the page itself made."""

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return binary


@dataclass
class Rendered:
    dom: str
    text: str
    page_requests: list[str]


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def render(page: Path, budget_ms: int = 10000) -> Rendered:
    """Load `page` from disk, let its scripts run for up to `budget_ms` of virtual time, and
    dump."""
    with tempfile.TemporaryDirectory() as profile:
        netlog = Path(profile) / "netlog.json"
        result = subprocess.run(
            [
                chromium_binary(),
                *FLAGS,
                f"--user-data-dir={profile}/user-data",
                f"--log-net-log={netlog}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        log = json.loads(netlog.read_text())
    parser = _Text()
    parser.feed(result.stdout)
    return Rendered(result.stdout, "".join(parser.parts), page_requests(log))


def page_requests(log: dict) -> list[str]:
    """URLs the page asked for. Chromium's own background requests (update checks and the like)
    carry the initiator 'not an origin'; anything the page loads carries the page's origin."""
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        url = params.get("url", "")  # the event's end phase carries no parameters
        started = event["type"] == start_job and params.get("initiator") != "not an origin"
        if started and url and not url.startswith(("file:", "data:", "blob:", "about:")):
            urls.append(url)
    return urls
