"""The live lab: one background trainer thread, the session it owns, live knobs, and the widgets.

Built on :mod:`carlab.learn`::

    from carlab.lab import open_lab
    lab = open_lab(checkpoint_path="../models/agent.safetensors")   # one notebook cell

Modules: ``trainer`` (the thread: commands in, snapshots out), ``session`` (the run it trains),
``hyperparams`` (live knobs: checks and how each is applied), ``manual`` (driving the shown car by
hand), ``widgets`` (dashboard, live view, charts, drive and dream views).
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=("trainer", "session", "hyperparams", "manual", "widgets"),
    names={
        "Trainer": "trainer",
        "Session": "session",
        "open_lab": "widgets",
        "Dashboard": "widgets",
        "DreamDrive": "widgets",
        "DreamView": "widgets",
        "DriveView": "widgets",
        "LatentExplorer": "widgets",
        "LiveView": "widgets",
    },
)
