"""The Dagster UI in a real browser: the asset graph shows every group, and a materialization
launched from the asset page's Materialize button succeeds.

Debian's chromium, driven by Playwright with `executable_path`: Playwright's own browser
download needs the internet and is never used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_pipelines.paths import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"]
CHEAP_ASSET = "movielens_ratings"  # a split of ML-100K: seconds, no model, no card
# A run worker loads torch and the whole code location; on two busy cores that takes a while.
UI_TIMEOUT_MS = 150_000
STEP_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="chromium is not installed (scripts/setup.sh installs it where apt-get can)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path) -> Iterator[str]:
    """dagster-webserver over a temporary instance with setup's config; yields its base URL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No daemon here: launch runs at once instead of queueing them for one.
    config = (REPO_ROOT / ".dagster_home" / "dagster.yaml").read_text() + (
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n")
    (home / "dagster.yaml").write_text(config)
    env = {**os.environ, "DAGSTER_HOME": str(home), "LAB_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1"}
    port = _free_port()
    with open(tmp_path / "webserver.log", "w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1",
             "-p", str(port), "-m", "assets_defs.definitions"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(base + "/server_info", timeout=2)
            break
        except OSError:
            assert server.poll() is None, (tmp_path / "webserver.log").read_text()
            assert time.monotonic() < deadline, "the webserver did not come up in 120 s"
            time.sleep(0.5)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _dismiss_welcome(page) -> None:
    """A fresh instance greets a new user with a newsletter dialog over the page."""
    from playwright.sync_api import TimeoutError as NoDialog

    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(NoDialog):
        skip.wait_for(timeout=5_000)
        skip.click()


@pytest.mark.timeout(300)
def test_graph_shows_every_group_and_a_ui_launched_run_succeeds(webserver, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from assets_defs.definitions import defs

    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(STEP_TIMEOUT_MS)

        page.goto(webserver + "/asset-groups")
        _dismiss_welcome(page)
        for group in sorted(groups):
            expect(page.get_by_text(group, exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "asset_graph.png"))

        page.goto(f"{webserver}/assets/{CHEAP_ASSET}")
        # The button's accessible name carries its icon's name too: match by text.
        page.get_by_role("button", name="Materialize").first.click()
        expect(page.get_by_text("Launched run")).to_be_visible()
        page.get_by_text("View", exact=True).click()
        page.wait_for_url("**/runs/**")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(
            timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text(CHEAP_ASSET).first).to_be_visible()
        shot = tmp_path / "run_success.png"
        page.screenshot(path=str(shot))
        browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
