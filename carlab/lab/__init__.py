"""The live lab: one background trainer thread, the session it owns, live knobs, and the widgets.

Built on :mod:`carlab.learn`::

    from carlab.lab import open_lab
    lab = open_lab(checkpoint_path="../models/agent.safetensors")   # one notebook cell

Modules: ``trainer`` (the control API: commands in, snapshots out), ``worker`` (the thread that
owns the run), ``jobs`` (slow work in helper threads), ``session`` (the run it trains),
``hyperparams`` (live knobs: checks and how each is applied), ``manual`` (driving the shown car by
hand), ``widgets`` (dashboard, live view and its race canvas and live charts, drive and dream views).
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=("trainer", "worker", "jobs", "session", "hyperparams", "manual", "widgets"),
    names={
        "Trainer": "trainer",
        "Session": "session",
        "open_lab": "widgets",
        "Charts": "widgets",
        "Dashboard": "widgets",
        "DreamView": "widgets",
        "DriveView": "widgets",
        "LatentExplorer": "widgets",
        "LiveCharts": "widgets",
        "LiveView": "widgets",
        "RaceCanvas": "widgets",
    },
)
