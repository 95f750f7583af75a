"""Every notebook runs headless from top to bottom (short settings), and is committed clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell; the first jit compiles on a shared CPU


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch, tmp_path):
    """Execute the notebook in a fresh kernel with CARLAB_FAST=1; any cell error fails the test."""
    monkeypatch.setenv("CARLAB_FAST", "1")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        # Run from notebooks/ as JupyterLab would, so relative paths in the notebook behave the same.
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell and traceback
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_without_outputs(path):
    """Notebooks are committed clean: no outputs, no execution counts (small, readable diffs)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


def test_the_live_lab_names_sliders_as_the_dashboard_labels_them():
    """Notebook 05's prose calls a slider by the words on it (``*explore P* slider``, ``slider
    *horizon H*``), so a student can find the one meant."""
    import re

    from carlab.lab.widgets.dashboard import LABELS

    nb = nbformat.read(NOTEBOOK_DIR / "05_live_lab.ipynb", as_version=4)
    prose = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    named = re.findall(r"\*([^*]+)\* slider|slider \*([^*]+)\*", prose)
    names = {a or b for a, b in named}
    assert names, "the tour names no slider"
    assert names <= set(LABELS.values()), f"not on any slider: {sorted(names - set(LABELS.values()))}"
