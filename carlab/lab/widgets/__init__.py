"""The live lab in JupyterLab: a dashboard around a background :class:`carlab.lab.trainer.Trainer`.

    from carlab.lab import open_lab
    lab = open_lab(checkpoint_path="models/agent.safetensors")   # one cell; returns at once

Modules: :mod:`~carlab.lab.widgets.dashboard` (controls and layout), :mod:`~carlab.lab.widgets.live_view`
(the one render loop), :mod:`~carlab.lab.widgets.race_canvas` (the canvas it updates: the browser
draws the cars), :mod:`~carlab.lab.widgets.live_charts` (the learning curves it hands the browser to
draw), :mod:`~carlab.lab.widgets.charts` (what those curves are, and the same as a PNG),
:mod:`~carlab.lab.widgets.keys` (keyboard driving), :mod:`~carlab.lab.widgets.drive` (drive a car by hand),
:mod:`~carlab.lab.widgets.dream_view` (drive inside a world model's dream),
:mod:`~carlab.lab.widgets.latent_explorer` (walk its latent space).
"""

from __future__ import annotations

from pathlib import Path

from carlab.lab.trainer import Trainer
from carlab.lab.widgets.charts import Charts
from carlab.lab.widgets.dashboard import Dashboard
from carlab.lab.widgets.dream_view import DreamView
from carlab.lab.widgets.drive import DriveView
from carlab.lab.widgets.latent_explorer import LatentExplorer
from carlab.lab.widgets.live_charts import LiveCharts
from carlab.lab.widgets.live_view import LiveView
from carlab.lab.widgets.race_canvas import RaceCanvas
from carlab.learn.config import Config

_OPEN: list[Dashboard] = []  # dashboards opened by open_lab in this kernel


def open_lab(
    config: Config | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    models_dir: str | Path = "models",
    auto_save: str | Path | None = None,
    show: bool = True,
) -> Dashboard:
    """Create a trainer (from ``checkpoint_path`` if given, else a fresh run of ``config``) and show
    its dashboard. A dashboard opened earlier by this function is closed first, with its trainer,
    so re-running the cell never leaves an old run training in the background."""
    while _OPEN:
        _OPEN.pop().close()
    trainer = Trainer(config, checkpoint_path=checkpoint_path, auto_save=auto_save)
    dashboard = Dashboard(trainer, models_dir=models_dir)
    _OPEN.append(dashboard)
    if show:
        dashboard.show()
    return dashboard


__all__ = [
    "Charts",
    "Dashboard",
    "DreamView",
    "DriveView",
    "LatentExplorer",
    "LiveCharts",
    "LiveView",
    "RaceCanvas",
    "Trainer",
    "open_lab",
]
