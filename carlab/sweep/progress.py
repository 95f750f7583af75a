"""The driver's side of a sweep: each finished trial's rows into ``results.csv`` and a tqdm bar of
trials done / running / stopped / failed.

:class:`SweepCallback` is the Ray Tune callback; it hands each trial event to a :class:`SweepLog`,
which writes and counts. Tune's callbacks run where Tune's driver runs: in this process for a local
Ray or ``--address host:port``, but on the head node under Ray Client (``ray://``), so there the
callback puts the events on a Ray queue and :func:`drain` brings them back here.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ray import tune

from carlab.sweep import grid, results


class SweepLog:
    """Writes a finished trial's rows the moment it finishes, and keeps the counts and the bar.

    ``finished`` counts trials that ran to their last chunk or that the scheduler stopped
    (``stopped``: fewer env steps than the sweep's); ``errors`` holds one line per failed trial.
    """

    def __init__(self, writer: results.ResultsWriter, total: int, *, steps: int, progress: bool = True):
        self.writer, self.total, self.steps = writer, total, steps
        self.running: set[str] = set()
        self.finished, self.stopped = 0, 0
        self.errors: list[str] = []
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="sweep", unit="trial", dynamic_ncols=True)

    def event(self, kind: str, trial_id: str, knobs: dict, report: dict, error: str = "") -> None:
        """One trial event: ``start``, ``complete`` (done, or stopped by the scheduler) or ``error``."""
        if kind == "start":
            self.running.add(trial_id)
            return self._show(0)
        self.running.discard(trial_id)
        status = (
            "error" if kind == "error" else "done" if report.get("env_steps", 0) >= self.steps else "stopped"
        )
        if kind == "error":
            self.errors.append(f"trial {grid.trial_name(knobs)}: {error}")
        else:
            self.finished += 1
            self.stopped += status == "stopped"
        if "seeds" in report:
            self.writer.append(results.trial_rows(grid.trial_name(knobs), knobs, report, status=status))
        self._show(1)

    def _show(self, done: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                running=len(self.running), stopped=self.stopped, failed=len(self.errors), refresh=False
            )
            self._bar.update(done)
            self._bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class SweepCallback(tune.Callback):
    """Tune's callback: each trial's start, completion or failure goes to ``sink`` (a :class:`SweepLog`
    in this process, or a ``ray.util.queue.Queue`` that :func:`drain` empties into one)."""

    def __init__(self, sink):
        self.sink = sink

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment's state; a SweepLog (file, bar) stays here.
        return {"sink": self.sink if not isinstance(self.sink, SweepLog) else None}

    def _send(self, *event) -> None:
        if isinstance(self.sink, SweepLog):
            self.sink.event(*event)
        elif self.sink is not None:
            self.sink.put(event)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """A trial starts running."""
        self._send("start", trial.trial_id, trial.config["knobs"], {})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """A trial ran to its end, or the scheduler stopped it."""
        self._send("complete", trial.trial_id, trial.config["knobs"], dict(trial.last_result or {}))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """A trial failed: one line of its error."""
        report = dict(trial.last_result or {})
        self._send("error", trial.trial_id, trial.config["knobs"], report, _last_line(trial.error_file))


def drain(queue, log: SweepLog, stop: threading.Event) -> threading.Thread:
    """A thread moving events from ``queue`` into ``log`` until ``stop`` is set and the queue is empty."""

    def run():
        from ray.util.queue import Empty

        while True:
            try:
                log.event(*queue.get(timeout=0.5))
            except Empty:
                if stop.is_set():
                    return

    thread = threading.Thread(target=run, name="carlab-sweep-drain", daemon=True)
    thread.start()
    return thread


def _last_line(error_file) -> str:
    """The last line of a trial's error file (the exception), or a stand-in."""
    try:
        lines = Path(error_file).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, TypeError):
        return "failed (no error file)"
    return lines[-1] if lines else "failed"
