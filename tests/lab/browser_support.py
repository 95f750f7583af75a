"""JupyterLab + headless Chromium for the browser tests and the README screenshots.

    with jupyter_lab(root) as (url, token):
        with chromium() as browser:
            page = browser.new_page()
            open_and_run_all(page, url, token, "notebooks/01_car_and_senses.ipynb")

The server runs on a free localhost port with its own runtime/config dirs under ``root`` (nothing is
written to the user's Jupyter setup); Chromium is Debian's ``/usr/bin/chromium`` (Playwright's own
browser download is not used).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(
    root: Path, extra_env: dict | None = None, start_timeout_s: float = 90.0
) -> Iterator[tuple[str, str]]:
    """Run JupyterLab over ``root``; yields ``(url, token)`` and stops the server (and its kernels) after."""
    root = Path(root)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"),
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter-config"),
        "IPYTHONDIR": str(root / ".ipython"),
        **(extra_env or {}),
    }
    # JupyterLab's own settings, as a student has them: its default windowing mode skips rendering
    # cells off screen, so the helpers read text with text_content() (inner_text() is empty there).
    log_path = root / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={root / '.jupyter-workspaces'}",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()  # Jupyter shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        print(log_path.read_text()[-3000:])  # shown by pytest on failure


@contextlib.contextmanager
def serve_notebook(
    root: Path, notebook: Path, models: tuple[Path, ...] = (), extra_env: dict | None = None
) -> Iterator[tuple[str, str]]:
    """:func:`jupyter_lab` over ``root`` holding a copy of ``notebook`` in ``notebooks/`` and of
    ``models`` in ``models/`` (the layout a clone has); yields ``(url, token)``."""
    root = Path(root)
    (root / "notebooks").mkdir()
    (root / "models").mkdir()
    shutil.copy(notebook, root / "notebooks" / Path(notebook).name)
    for model in models:
        shutil.copy(model, root / "models" / Path(model).name)
    with jupyter_lab(root, extra_env=extra_env) as served:
        yield served


@contextlib.contextmanager
def chromium():
    """A headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_and_run_all(page, url: str, token: str, notebook: str) -> None:
    """Open ``notebook`` (a path under the server root) in JupyterLab and click Run > Run All Cells."""
    page.goto(f"{url}/lab/tree/{notebook}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    with contextlib.suppress(Exception):  # JupyterLab asks once whether to fetch news; say no
        page.get_by_role("button", name="No", exact=True).click(timeout=5000)
    # The indicator can read idle before the kernel is connected, and a Run All then does nothing:
    # click it until the first code cell shows it runs ([*]) or ran ([1]).
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    first_prompt = page.locator(".jp-CodeCell .jp-InputArea-prompt").first
    for _ in range(12):
        dismiss_dialogs(page)
        try:
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=10_000)
            page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click(timeout=10_000)
        except PlaywrightTimeout:  # a dialog popped up in between: close the menu, dismiss it, retry
            page.keyboard.press("Escape")
            continue
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if re.search(r"\[(\*|\d+)\]", first_prompt.text_content() or ""):
                return
            time.sleep(0.5)
    raise TimeoutError(f"Run All Cells did not start {notebook}")


def open_file_browser(page) -> None:
    """Open JupyterLab's file browser in the left sidebar (where a student has it) unless it is open."""
    panel = page.locator("#filebrowser")
    if not panel.is_visible():
        page.locator(".jp-SideBar .lm-TabBar-tab[data-id='filebrowser']").click(timeout=10_000)
        panel.wait_for(timeout=10_000)


def dismiss_dialogs(page) -> None:
    """Close a JupyterLab dialog in the way ("kernel not ready", "Select Kernel"...): Escape, and if
    it stays, its default button (for "Select Kernel": the notebook's own kernel)."""
    dialog = page.locator(".jp-Dialog")
    if not dialog.count():
        return
    page.keyboard.press("Escape")
    with contextlib.suppress(Exception):
        dialog.first.wait_for(state="detached", timeout=2000)
    if dialog.count():
        with contextlib.suppress(Exception):
            page.locator(".jp-Dialog .jp-mod-accept").first.click(timeout=2000)


def scroll_to(page, locator, timeout_s: float = 30.0):
    """Scroll the open notebook down until ``locator`` is in the page, and into view; returns it.
    JupyterLab's default windowing mode leaves the cells off screen out of the DOM altogether."""
    deadline = time.monotonic() + timeout_s
    panel = page.locator(".jp-WindowedPanel-outer").first
    while not locator.count():
        if time.monotonic() > deadline:
            raise TimeoutError(f"scrolled the notebook for {timeout_s} s and did not find {locator}")
        panel.evaluate("(el) => el.scrollBy(0, el.clientHeight / 2)")
        time.sleep(0.3)
    locator.first.scroll_into_view_if_needed(timeout=10_000)
    return locator.first


def wait_until_run(page, timeout_s: float) -> None:
    """Wait until every code cell of the open notebook has run (an execution count, kernel idle)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if prompts and idle and all(re.search(r"\[\d+\]", p) for p in prompts):
            return
        time.sleep(1.0)
    raise TimeoutError(f"the notebook did not finish running in {timeout_s} s")
