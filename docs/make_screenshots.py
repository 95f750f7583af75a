"""Take the README's notebook screenshots from real runs in a browser: ``python docs/make_screenshots.py``.

For each notebook: copy it (and ``models/``) to a temporary root, start JupyterLab there, open the
notebook in headless Chromium (Playwright), Run All at full size, do what a student would (drive with a
key held, press Start...), and save the output of one chosen cell as ``docs/notebook_NN.png``.
Needs ``/usr/bin/chromium``; takes several minutes (each notebook runs for real).

    python docs/make_screenshots.py            # all notebooks
    python docs/make_screenshots.py 03 05      # only these
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from browser_support import chromium, jupyter_lab, open_and_run_all, wait_until_run


@dataclass(frozen=True)
class Shot:
    """Which output to photograph, and what to do first."""

    cell_contains: str  # a piece of the source of the cell whose output is photographed
    hold_key: str | None = None  # a key held down over the output's canvas (driving) before the shot
    hold_s: float = 2.5
    click: str | None = None  # a button (by its text) clicked in the output before the shot
    settle_s: float = 2.0  # wait after the action


SHOTS = {
    "01": Shot("car = DriveView(", hold_key="ArrowUp", hold_s=1.1, settle_s=0.3),
    "02": Shot("plots.truth_model_error("),
    "03": Shot("view = DreamView(", hold_key="ArrowUp", hold_s=1.1, settle_s=0.3),
    "04": Shot("plots.dream_and_real_frame("),
    "05": Shot("open_lab(", click="Start", settle_s=20.0),
    "06": Shot("plot_curves("),
}


def shoot(page, url: str, token: str, notebook: Path, shot: Shot, out: Path, timeout_s: float) -> None:
    """Run ``notebook`` in the browser and save the chosen output as ``out``."""
    open_and_run_all(page, url, token, f"notebooks/{notebook.name}")
    wait_until_run(page, timeout_s)
    cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=shot.cell_contains)).first
    output = cell.locator(".jp-OutputArea").first
    output.scroll_into_view_if_needed()
    if shot.click:
        output.locator("button", has_text=shot.click).first.click()
    if shot.hold_key:
        output.locator("canvas").first.hover()
        page.keyboard.down(shot.hold_key)
        time.sleep(shot.hold_s)
        page.keyboard.up(shot.hold_key)
    time.sleep(shot.settle_s)
    output.screenshot(path=str(out))
    print(f"wrote {out.relative_to(ROOT)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="notebook numbers to photograph (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a notebook may run (default 600)"
    )
    args = parser.parse_args(argv)
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    wanted = [nb for nb in notebooks if not args.only or nb.name[:2] in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "notebooks", root / "notebooks")
        shutil.copytree(ROOT / "models", root / "models")
        with jupyter_lab(root) as (url, token), chromium() as browser:
            for notebook in wanted:
                shot = SHOTS.get(notebook.name[:2])
                if shot is None:
                    print(f"skipping {notebook.name}: no shot defined in SHOTS")
                    continue
                page = browser.new_page(viewport={"width": 1900, "height": 1500})
                try:
                    shoot(
                        page,
                        url,
                        token,
                        notebook,
                        shot,
                        ROOT / "docs" / f"notebook_{notebook.name[:2]}.png",
                        args.timeout,
                    )
                finally:
                    page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
