"""How long each course notebook takes to run top to bottom: what a newcomer waits for after
**Run → Run All Cells**.

Each notebook runs in a fresh kernel (nbclient, from ``notebooks/`` as JupyterLab runs it) at full
size, or with ``CARLAB_FAST=1`` under ``--fast`` (what the tests run). The time is from the first
cell's start to the last cell's end; the kernel's start-up is not counted (JupyterLab has started it
by the time a student presses Run All). Notebook 05 opens the live lab and returns once its cells are
done (the lab keeps training in the background until the kernel stops); its time is until then.

    python benchmarks/notebook_times.py                 # every notebook, full size
    python benchmarks/notebook_times.py 01 03 --json    # some of them, one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 900


def run_notebook(path: Path, *, fast: bool) -> float:
    """Seconds to run every cell of ``path`` in a fresh kernel (start-up excluded)."""
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", MPLBACKEND="Agg")
    if fast:
        env["CARLAB_FAST"] = "1"
    else:
        env.pop("CARLAB_FAST", None)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    with client.setup_kernel(env=env):
        start = time.perf_counter()
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen notebooks (all by default), print a table (or ``--json``), return the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*", help="notebook number prefixes, e.g. 01 04 (default: all)")
    parser.add_argument("--fast", action="store_true", help="CARLAB_FAST=1: the tests' short settings")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.which:
        chosen = [p for p in paths if any(p.name.startswith(w) for w in args.which)]
        unknown = [w for w in args.which if not any(p.name.startswith(w) for p in paths)]
        if unknown:
            parser.error(
                f"no notebook starts with {unknown[0]!r}; there are {', '.join(p.name for p in paths)}"
            )
        paths = chosen
    times = {}
    for path in paths:
        times[path.name] = round(run_notebook(path, fast=args.fast), 1)
        if not args.json:
            print(f"{path.name:36s} {times[path.name]:7.1f} s", flush=True)
    summary = {"fast": args.fast, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "seconds": times}
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
