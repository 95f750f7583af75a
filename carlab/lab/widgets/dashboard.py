"""The lab dashboard: buttons, sliders, a live view, charts and a status line around a Trainer.

    from carlab.lab import Dashboard
    Dashboard(trainer).show()          # returns at once; everything runs in background threads

Every control only *posts* to the trainer (``trainer.start()``, ``trainer.set_hyperparameters(...)``);
nothing here touches the training state. One :class:`~carlab.lab.widgets.live_view.LiveView` thread does
all drawing and also refreshes the status line, the checkpoint list, and — after a load or reset —
the sliders (so they show what the trainer really uses).
"""

from __future__ import annotations

import functools
import html
import math
import re
import threading
import time
from pathlib import Path

import ipywidgets as widgets
from ipyevents import Event

from carlab.lab import hyperparams
from carlab.lab.widgets import charts
from carlab.lab.widgets.keys import KeyDriver
from carlab.lab.widgets.live_charts import LiveCharts
from carlab.lab.widgets.live_view import LiveView
from carlab.lab.widgets.race_canvas import RaceCanvas
from carlab.learn import checkpoint
from carlab.sim.track import SCREEN_HEIGHT, SCREEN_WIDTH

SLIDER_RANGES = {  # what the sliders offer: a comfortable part of each knob's valid range
    "world_model_lr": (-5.0, -1.0),  # log10
    "actor_lr": (-5.0, -1.0),
    "critic_lr": (-5.0, -1.0),
    "explore_prob": (0.0, 1.0),
    "explore_noise": (0.0, 1.0),
    "horizon": (0, 50),  # 0: the anchored learner asks its critics at once (the dream learner refuses it)
    "train_every": (1, 50),
    "batch_size": (1, 256),
    "target_entropy": (-6.0, 1.0),  # 2 actions: -2 (the default) is a std of about 0.1 on each
}
SLIDER_STEPS = {"target_entropy": 0.5}  # a config knob: each new value compiles once, so few values
LABELS = {
    "world_model_lr": "WM lr",
    "actor_lr": "actor lr",
    "critic_lr": "critic lr",
    "explore_prob": "explore P",
    "explore_noise": "noise σ",
    "horizon": "horizon H",
    "train_every": "train every",
    "batch_size": "batch",
    "target_entropy": "entropy",
}
_SAVE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Dashboard:
    """Controls and live view for one :class:`carlab.lab.trainer.Trainer`; see the module docstring."""

    def __init__(self, trainer, *, models_dir: str | Path = "models", max_fps: float = 40.0):
        """Build the widgets (nothing is shown or started until :meth:`show`).

        Args:
            trainer: the run to control.
            models_dir: where Save writes ``<name>.safetensors`` and Load lists checkpoints.
            max_fps: cap on live-view pose updates per second (40: headroom over the ~30 rounds a
                second training reaches at most; the browser draws its own frames between updates).
        """
        self.trainer = trainer
        self.models_dir = Path(models_dir)
        self.message = ""  # the last thing a control said (refused values, save errors, ...)
        self._models_mtime: float | None = None
        self._env_steps = 0  # at the last status tick: fewer now means another run (a reset or a load)
        self._local = threading.local()  # .syncing: the render loop is setting sliders itself
        self._build_controls()
        # The canvas scales with its column (height follows the 4:3 frame), the charts' width too. No
        # margin: width 100% plus the widgets' default 2 px margins would reach past the column.
        fill = functools.partial(widgets.Layout, width="100%", height="auto", margin="0")
        self.canvas = RaceCanvas(SCREEN_WIDTH, SCREEN_HEIGHT, layout=fill(max_width=f"{SCREEN_WIDTH}px"))
        self.charts = LiveCharts()
        self.charts_caption = widgets.HTML(charts.captions_html(()), layout=fill())
        self.keys = KeyDriver(self._set_manual_action)
        self.key_events = Event(
            source=self.canvas, watched_events=["keydown", "keyup", "mouseleave"], prevent_default_action=True
        )
        self.key_events.on_dom_event(self.keys.handle)
        self.view = LiveView(
            trainer,
            self.canvas,
            self.charts,
            # The real return is discounted with the run's own gamma (a load or reset may change it).
            discount=lambda: self.trainer.config.agent.discount,
            on_status=self._on_status,
            max_fps=max_fps,
        )
        self.widget = widgets.VBox(
            [
                _row(
                    self.start,
                    self.pause,
                    self.step,
                    self.step_rounds,
                    self.reset,
                    self.mode,
                    self.new_track,
                ),
                _row(self.save_name, self.save, self.checkpoints, self.load, self.refresh),
                # A laptop screen with JupyterLab's file browser open leaves ~900 px for the output:
                # the charts sit right of the picture when both columns fit, and wrap below it otherwise.
                _row(
                    widgets.VBox(
                        [self.canvas, self.status, self.error, _row(*self.sliders.values()), self.help],
                        layout=widgets.Layout(flex="1 1 460px", min_width="0", max_width=f"{SCREEN_WIDTH}px"),
                    ),
                    widgets.VBox(
                        [self.charts.widget, self.charts_caption, self.hyper_line],
                        layout=widgets.Layout(flex="0 1 420px", min_width="0"),
                    ),
                ),
            ],
            layout=widgets.Layout(width="100%"),
        )
        self._refresh_checkpoints()

    # ------------------------------------------------------------------ building
    def _build_controls(self) -> None:
        button = functools.partial(widgets.Button, layout=widgets.Layout(width="auto"))
        self.start = button(description="Start", button_style="success", icon="play")
        self.pause = button(description="Pause", icon="pause")
        self.step = button(
            description="Step", icon="step-forward", tooltip="pause, then run N training rounds"
        )
        self.step_rounds = widgets.BoundedIntText(
            value=1, min=1, max=10_000, layout=widgets.Layout(width="70px")
        )
        self.reset = button(description="Reset", button_style="warning", icon="undo", tooltip="a fresh run")
        self.mode = widgets.ToggleButtons(options=[("AI", "ai"), ("Manual", "manual")], value="ai")
        self.mode.style.button_width = "70px"
        self.new_track = button(description="New track", icon="road")
        self.save_name = widgets.Text(value="lab", description="name", layout=widgets.Layout(width="180px"))
        self.save = button(description="Save", icon="save")
        self.checkpoints = widgets.Dropdown(
            options=[], description="model", layout=widgets.Layout(width="320px")
        )
        self.load = button(description="Load", icon="folder-open")
        self.refresh = button(description="", icon="refresh", tooltip="list models/ again")
        self.help = widgets.HTML(
            "<small>Manual: hover over the track and drive with the arrow keys or WASD. "
            "Changing horizon, train every, batch, noise or entropy compiles once per new value (a few seconds;"
            " the status says what for and for how long).</small>"
        )
        self.status = widgets.HTML("starting…")
        self.hyper_line = widgets.HTML("")
        self.error = widgets.HTML("")
        self.sliders = {name: self._slider(name) for name in hyperparams.KNOBS}

        self.start.on_click(self._reporting(lambda _: self.trainer.start()))
        self.pause.on_click(self._reporting(lambda _: self.trainer.pause()))
        self.step.on_click(self._reporting(lambda _: self.trainer.step(int(self.step_rounds.value))))
        self.reset.on_click(self._reporting(lambda _: self.trainer.reset()))
        self.new_track.on_click(self._reporting(lambda _: self.trainer.new_track()))
        self.save.on_click(self._reporting(self._on_save))
        self.load.on_click(self._reporting(self._on_load))
        self.refresh.on_click(self._reporting(lambda _: self._refresh_checkpoints(force=True)))
        self.mode.observe(self._reporting(self._on_mode), names="value")

    def _slider(self, name: str):
        knob = hyperparams.KNOBS[name]
        low, high = SLIDER_RANGES[name]
        common = {
            "description": LABELS[name],
            "continuous_update": False,
            "style": {"description_width": "72px"},
            # Two or more to a row, shrinking with the column, rather than a fixed grid that overflows.
            "layout": widgets.Layout(width="auto", flex="1 1 220px", min_width="200px", max_width="400px"),
        }
        if knob.log:
            slider = widgets.FloatLogSlider(
                value=1e-3, base=10, min=low, max=high, step=0.1, readout_format=".1e", **common
            )
        elif knob.kind is int:
            slider = widgets.IntSlider(value=low, min=low, max=high, **common)
        else:
            step = SLIDER_STEPS.get(name, 0.01)
            slider = widgets.FloatSlider(value=low, min=low, max=high, step=step, **common)
        slider.tooltip = knob.doc
        slider.observe(self._reporting(functools.partial(self._on_slider, name)), names="value")
        return slider

    # ------------------------------------------------------------------ showing
    def show(self) -> None:
        """Display the dashboard and start its render loop; returns at once."""
        from IPython.display import display

        display(self.widget)
        self.view.start()

    def close(self, *, stop_trainer: bool = True) -> None:
        """Stop the render loop (and the trainer, unless told not to) and close the widgets."""
        self.view.stop()
        if stop_trainer:
            self.trainer.stop()
        self.key_events.close()
        self.widget.close()

    # ------------------------------------------------------------------ callbacks (kernel thread)
    def _reporting(self, callback):
        """Wrap a widget callback so an exception shows in the dashboard instead of vanishing."""

        @functools.wraps(callback)
        def wrapped(*args):
            try:
                callback(*args)
            except Exception as error:  # noqa: BLE001 - shown to the student, who can fix the value
                self.message = f"{type(error).__name__}: {error}"
            else:
                self.message = ""  # an action that worked clears the complaint about the last one
            self._show_error()

        return wrapped

    def _on_slider(self, name: str, change) -> None:
        if getattr(self._local, "syncing", False):
            return  # the render loop showing the trainer's value, not a person moving the slider
        self.trainer.set_hyperparameters(**{name: change["new"]})

    def _on_mode(self, change) -> None:
        self.trainer.set_mode(change["new"])
        if change["new"] == "ai":
            self.keys.release_all()

    def _set_manual_action(self, action) -> None:
        self.trainer.set_manual_action(action)

    def _on_save(self, _) -> None:
        name = self.save_name.value.strip().removesuffix(checkpoint.SUFFIX)
        if not _SAVE_NAME.match(name):
            raise ValueError(f"save name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
        self.trainer.save(self.models_dir / f"{name}{checkpoint.SUFFIX}")

    def _on_load(self, _) -> None:
        if not self.checkpoints.value:
            self._refresh_checkpoints(force=True)  # a model saved since the last look
        if not self.checkpoints.options:
            raise ValueError(f"nothing to load: no run checkpoint in {self.models_dir}/ (Save one first)")
        if not self.checkpoints.value:
            raise ValueError("choose a model in the dropdown, then Load")
        self.trainer.load(self.checkpoints.value)

    # ------------------------------------------------------------------ refreshing (render thread)
    def _on_status(self, snap: dict) -> None:
        if snap["env_steps"] < self._env_steps:
            self.view.send_charts(snap)  # the new run's charts now, not at the next chart tick
        self._env_steps = snap["env_steps"]
        self.status.value = format_status(snap)
        self.hyper_line.value = format_hyper(snap.get("hyper", {}))
        self._sync_sliders(snap.get("hyper", {}))
        caption = charts.captions_html(snap.get("history", ()))
        if self.charts_caption.value != caption:
            self.charts_caption.value = caption  # the spread panel's lines come and go with it
        self._show_error(snap.get("error"))
        self._refresh_checkpoints()

    def _sync_sliders(self, hyper: dict) -> None:
        """Show the values the trainer uses (they change on load, reset, and explore_prob decays)."""
        self._local.syncing = True
        try:
            for name, value in hyper.items():
                slider = self.sliders.get(name)
                if slider is not None and not _close(slider.value, value, slider):
                    slider.value = value  # the slider clips a value beyond its range
            inert = not hyperparams.tunes_temperature(self.trainer.config)
            if self.sliders["target_entropy"].disabled != inert:
                self.sliders["target_entropy"].disabled = inert
        finally:
            self._local.syncing = False

    def _show_error(self, trainer_error: str | None = None) -> None:
        parts = []
        if self.message:
            parts.append(f"<b>{html.escape(self.message)}</b>")
        if trainer_error:
            head, _, rest = trainer_error.partition("\n")
            parts.append(
                f"<b>trainer error:</b> {html.escape(head)}<details><pre>{html.escape(rest)}</pre></details>"
            )
        if self.view.error:
            parts.append(f"<b>view error:</b><pre>{html.escape(self.view.error)}</pre>")
        text = f"<div style='color:#b00020'>{'<br>'.join(parts)}</div>" if parts else ""
        if self.error.value != text:
            self.error.value = text

    def _refresh_checkpoints(self, force: bool = False) -> None:
        try:
            mtime = self.models_dir.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._models_mtime and not force:
            return
        self._models_mtime = mtime
        options = []
        for entry in checkpoint.list_checkpoints(self.models_dir):
            if entry["valid"] and isinstance(entry["metadata"].get("config"), dict):
                steps = entry["metadata"].get("env_steps", 0)
                options.append((f"{entry['name']} ({steps:,} steps)", str(entry["path"])))
        current = self.checkpoints.value
        self.checkpoints.options = options
        values = [v for _, v in options]
        # Keep the student's choice; otherwise preselect the newest model (list_checkpoints' first),
        # so Load with the dropdown untouched loads something sensible.
        self.checkpoints.value = current if current in values else (values[0] if values else None)


def _row(*children) -> widgets.HBox:
    """A row of widgets that wraps onto the next line where the output is too narrow for them."""
    return widgets.HBox(list(children), layout=widgets.Layout(flex_flow="row wrap", max_width="100%"))


def format_status(snap: dict, *, now: float | None = None) -> str:
    """The status line: what the trainer is doing (a helper's work: for what, and for how long so
    far, ``now`` being ``time.monotonic()``) and its counters."""
    explore = snap.get("explore_prob", math.nan)
    doing = f"<b>{html.escape(snap['status'])}</b>"
    if snap.get("busy_since") is not None:
        elapsed = (time.monotonic() if now is None else now) - snap["busy_since"]
        detail = html.escape(snap.get("busy_detail") or "")
        doing += f"{' ' + detail if detail else ''} ⏳ {max(elapsed, 0.0):.0f} s"
    parts = [
        doing,
        f"{snap['env_steps']:,} env steps",
        f"{snap['steps_per_s']:,.0f} steps/s",
        f"{snap['episodes']:,} episodes",
        f"explore {explore:.3f}" if math.isfinite(explore) else "explore –",
        f"best progress {snap['best_progress']:.2f} laps",
        f"{snap['updates']:,} updates",
    ]
    parts += driver_status(snap)
    cars, shown = snap.get("cars"), snap.get("shown_car", 0)
    if cars is not None:
        x, y, speed, _ = (float(v) for v in cars[shown])
        parts.append(
            f"<span class='carlab-car' data-x='{x:.1f}' data-y='{y:.1f}' data-speed='{speed:.2f}'>"
            f"red car at ({x:.0f}, {y:.0f}), speed {speed:.1f}</span>"
        )
    if snap.get("message"):
        parts.append(html.escape(snap["message"]))
    return " · ".join(parts)


def driver_status(snap: dict) -> list[str]:
    """With policy checkpoints (``train.checkpoint_tracks``): which actor drives and how the newest
    did on its latest test, from the newest history record (nothing when the run keeps none)."""
    history = snap.get("history") or ()
    record = next((r for r in reversed(history) if "driver/laps" in r), None)
    if record is None:
        return []
    config = snap.get("config")
    tracks = ""
    if config is not None:
        t = config.train
        tracks = f"/{t.checkpoint_tracks + t.checkpoint_more_tracks}"
    driver = f"the actor of {record['driver/env_steps']:,} env steps"
    return [
        f"driver: {driver} ({record['driver/laps']}{tracks} test laps)",
        f"newest actor {record['driver/newest_laps']}{tracks} test laps",
        f"{record['test_steps']:,} test steps",
    ]


def format_hyper(hyper: dict) -> str:
    """The hyperparameters the trainer now uses, one ``name=value`` each (what the sliders set)."""
    if not hyper:
        return ""
    items = []
    for name, value in hyper.items():
        text = (
            f"{value:.2e}"
            if name.endswith("_lr")
            else (f"{value:.3f}" if isinstance(value, float) else str(value))
        )
        items.append(f"<span class='carlab-hyper' data-name='{name}'>{name}={text}</span>")
    return "<small>in effect: " + " · ".join(items) + "</small>"


def _close(shown, actual, slider) -> bool:
    """Whether the slider already shows ``actual`` as well as it can (its precision and range)."""
    if isinstance(slider, widgets.FloatLogSlider):
        low, high = slider.base**slider.min, slider.base**slider.max
        return math.isclose(shown, min(max(actual, low), high), rel_tol=1e-3)
    clipped = min(max(actual, slider.min), slider.max)
    if isinstance(slider, widgets.IntSlider):
        return int(shown) == int(clipped)
    return abs(shown - clipped) < slider.step / 2
