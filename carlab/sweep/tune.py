"""Trials of a sweep on Ray Tune: a local Ray started for the sweep, or a cluster at ``--address``.

Each trial is one config (:func:`carlab.sweep.grid.trial_config`) whose seeds train vmapped in one
call (:func:`carlab.learn.seeds.train_seeds`). After every chunk the trial reports to Tune the
median over its seeds of the validation lap rate (``laps``), so a scheduler (ASHA) can stop poor
trials early; with its last chunk it hands Tune a checkpoint: each seed's best run. The driver
appends the trial's rows to ``DIR/results.csv`` as it finishes (:mod:`carlab.sweep.results`)::

    outcome = run_sweep(make_sweep(knobs={"agent.actor_lr": [1e-4, 3e-4]}, seeds="0-3",
                                   steps=50_000, preset="tiny"), "sweeps/lr")

Threads: XLA sizes its CPU thread pool by the process's CPU affinity (``XLA_FLAGS`` thread
options no longer bound it in jax 0.10), so each trial pins itself to as many cores as Ray gave
it before JAX starts (:func:`limit_cpus`); two trials on one node never share a core.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import ray
from ray import tune

from carlab.sweep import grid, results
from carlab.sweep.progress import SweepCallback, SweepLog, drain

_HELD_SLOTS: list = []  # the open lock files of this process's CPU slot: held until it exits


def limit_cpus(count: int) -> list[int]:
    """Pin this process to ``count`` cores of its node that no other live trial holds (a slot,
    claimed with a lock file in the temp folder); returns the cores. Call it before JAX starts."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= count or _HELD_SLOTS:
        return cores
    slots = len(cores) // count
    for slot in range(slots):
        path = Path(tempfile.gettempdir()) / f"carlab-sweep-cpus{count}-slot{slot}.lock"
        try:
            lock = _open_lock(path)
        except PermissionError:  # a lock file this user may not read: count the slot as taken
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _HELD_SLOTS.append(lock)
        return _pin(cores[slot * count : (slot + 1) * count])
    slot = os.getpid() % slots  # every slot is held (Ray gave out fractions of a CPU): share one
    return _pin(cores[slot * count : (slot + 1) * count])


def _open_lock(path: Path):
    """The slot's lock file, opened read-only: ``flock`` needs no write access, so trials of every
    user share the slots, whoever made the file (opening another user's file in the sticky temp
    folder for writing is refused). Held open while the process lives: that is the claim."""
    try:
        return open(path)
    except FileNotFoundError:
        pass
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:  # another trial made it meanwhile
        return open(path)


def _pin(cores: list[int]) -> list[int]:
    for thread in os.listdir("/proc/self/task"):  # Ray's threads too; threads made later inherit
        os.sched_setaffinity(int(thread), cores)
    return cores


def train_trial(params: dict) -> None:
    """Ray Tune's function trainable: train the trial's seeds, report after every chunk."""
    cores = limit_cpus(params["cpus"])
    from carlab.learn import loop, runs
    from carlab.learn import seeds as seeds_lib

    config = grid.trial_config(params["preset"], params["knobs"])
    seeds, steps = params["seeds"], params["steps"]
    savers = [runs.BestSaver(None, seeds_lib.seed_config(config, seed)) for seed in seeds]
    chunks = math.ceil(loop.rounds_for(steps, config) / config.train.chunk_rounds)
    reported = 0

    def report(states, records: list[dict]) -> None:
        nonlocal reported
        reported += 1
        metrics = report_of(records, [saver.best for saver in savers], seeds)
        metrics["cpus"] = len(cores)
        if reported < chunks:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            for seed, saver in zip(seeds, savers):
                runs.save_run(
                    Path(folder) / f"seed{seed}.safetensors",
                    saver.best_state or saver.state,
                    saver.config,
                    saver.history,
                    extra=runs.best_of_run_metadata(saver.best),
                )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    seeds_lib.train_seeds(config, seeds, steps, savers=savers, callback=report, progress=False)


def report_of(records: list[dict], best: list[tuple[float, float]], seeds) -> dict:
    """What a trial reports after a chunk: ``laps`` (the median over seeds of the validation lap
    rate, Tune's metric), ``best_laps`` (the median of each seed's best), and per seed lists."""
    laps = [float(r["val/laps"]) for r in records]
    return {
        "laps": float(np.median(laps)),
        "best_laps": float(np.median([b[0] for b in best])),
        "env_steps": int(records[0]["env_steps"]),
        "time_s": float(records[0]["time_s"]),
        "seeds": list(seeds),
        "seed_laps": laps,
        "seed_best_laps": [float(b[0]) for b in best],
        "seed_progress": [float(r["val/progress"]) for r in records],
    }


class ClusterError(RuntimeError):
    """Ray could not be started or reached (one line: what and where)."""


def check_address(address: str, *, timeout_s: float = 3.0) -> None:
    """``ClusterError`` unless something answers at ``ray://host:port`` or ``host:port`` within
    ``timeout_s`` (Ray's own client retries for a minute before it gives up)."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: give ray://host:port, host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(
            f"no Ray cluster at {address} ({error.strerror or error}); start one there with "
            f"`ray start --head`, or drop --address for a local Ray"
        ) from None


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a small local Ray (``num_cpus``, default all
    cores; no dashboard, workers' output kept off the terminal). Returns whether it started one."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    # A local Ray turns token authentication on and says so on every start: not news to a sweep.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address is None:
            cpus = num_cpus or os.cpu_count()
            with warnings.catch_warnings():
                # Ray starts its daemons by fork + exec; JAX (imported to parse the seeds) warns of
                # any fork, but only a fork that goes on running Python can deadlock.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=256 * 2**20, **quiet)
        else:
            if address != "auto":
                check_address(address)
            ray.init(address=address, **quiet)
    except ClusterError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, grpc errors
        what = "start a local Ray" if address is None else f"connect to the Ray cluster at {address}"
        raise ClusterError(f"cannot {what}: {str(error).strip().splitlines()[0]}") from None
    return True


@dataclasses.dataclass
class Outcome:
    """What :func:`run_sweep` did."""

    results: Path
    """``DIR/results.csv``."""
    figures: list[Path]
    """One figure per swept knob."""
    best_trial: str | None
    """The name of the best trial (:func:`carlab.sweep.results.best_trial`), None if none finished."""
    best_files: list[Path]
    """The best trial's runs, one per seed (``DIR/best-seed<S>.safetensors``)."""
    finished: int
    """Trials that finished (done or stopped early)."""
    total: int
    """Trials in the grid."""
    errors: list[str]
    """One line per failed trial."""

    @property
    def interrupted(self) -> bool:
        """Whether the sweep ended before every trial finished or failed (Ctrl-C)."""
        return self.finished + len(self.errors) < self.total


def run_sweep(
    sweep: grid.Sweep,
    out,
    *,
    address: str | None = None,
    cpus_per_trial: int = 1,
    scheduler: str | None = None,
    storage: str | None = None,
    progress: bool = True,
) -> Outcome:
    """Run every trial of ``sweep`` on Ray Tune and write its results to the folder ``out``.

    Args:
        sweep: the grid, seeds and steps (:mod:`carlab.sweep.grid`).
        out: the folder for ``results.csv``, the figures and the best trial's checkpoints.
        address: a Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a
            local Ray for this sweep and shuts it down at the end.
        cpus_per_trial: cores Ray gives each trial (its XLA threads are pinned to them).
        scheduler: None (every trial runs to the end) or ``"asha"`` (stops poor trials early).
        storage: where Tune keeps trial checkpoints (default ``out/tune``); on a cluster a path
            every node shares or a cloud URI.
        progress: a tqdm bar of trials done / running / stopped / failed.
    """
    out = Path(out).resolve()
    trials = sweep.trials()
    # The classic output engine honours verbose=0 (the new one prints its tables regardless).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = start_ray(address)  # first: nothing is written unless Ray answers
    stop, drainer, log = threading.Event(), None, None
    try:
        writer = results.ResultsWriter(out, list(sweep.knobs))
        writer.start()
        log = SweepLog(writer, len(trials), steps=sweep.steps, progress=progress)
        if storage is None:
            storage = str(out / "tune")
            shutil.rmtree(Path(storage, "trials"), ignore_errors=True)  # an earlier sweep's trials here
        callback = SweepCallback(log)
        # Under Ray Client Tune's driver, and so its callbacks, run on the head: events come back by queue.
        if ray.util.client.ray.is_connected():
            from ray.util.queue import Queue

            callback = SweepCallback(Queue(actor_options={"num_cpus": 0}))
            drainer = drain(callback.sink, log, stop)
        have = ray.cluster_resources().get("CPU", 0)
        if cpus_per_trial > have:
            raise ClusterError(f"cpus_per_trial {cpus_per_trial}: the Ray cluster has {have:g} CPUs in all")
        space = {**sweep.to_dict(), "knobs": tune.grid_search(trials), "cpus": cpus_per_trial}
        asha = None
        if scheduler == "asha":
            chunks = max(1, math.ceil(sweep.steps / _steps_per_chunk(sweep)))
            asha = tune.schedulers.ASHAScheduler(max_t=chunks, grace_period=max(1, chunks // 4))
        tuner = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": cpus_per_trial}),
            param_space=space,
            tune_config=tune.TuneConfig(metric="laps", mode="max", scheduler=asha),
            run_config=tune.RunConfig(
                name="trials",
                storage_path=storage,
                callbacks=[callback],
                verbose=0,
            ),
        )
        grid_results = tuner.fit()
        stop.set()
        if drainer is not None:
            drainer.join()  # every finished trial's rows are in results.csv before the best is picked
        best, files = _keep_best(grid_results, out)
    finally:
        stop.set()
        if drainer is not None:
            drainer.join()
        if log is not None:
            log.close()
        if started:
            ray.shutdown()
    figures = results.write_figures(out, list(sweep.knobs))
    return Outcome(writer.path, figures, best, files, log.finished, len(trials), log.errors)


def _steps_per_chunk(sweep: grid.Sweep) -> int:
    config = grid.trial_config(sweep.preset, sweep.trials()[0])
    return config.train.chunk_rounds * config.train.num_cars * config.train.train_every


def _keep_best(grid_results, out: Path) -> tuple[str | None, list[Path]]:
    """Copy the best finished trial's checkpoint (each seed's best run) to ``out/best-seed<S>.safetensors``."""
    from carlab.learn import runs

    rows = results.read_results(out)
    saved = {grid.trial_name(r.config["knobs"]): r.checkpoint for r in grid_results if r.checkpoint}
    ranked = results.medians([row for row in rows if row["trial"] in saved])
    best = results.best_trial([row for row in rows if row["trial"] in ranked])
    if best is None:
        return None, []
    files = []
    try:
        with saved[best].as_directory() as folder:
            for file in sorted(Path(folder).glob("seed*.safetensors")):
                seed = int(file.stem.removeprefix("seed"))
                files.append(Path(shutil.copyfile(file, runs.seed_path(out / "best.safetensors", seed))))
    except OSError as error:  # a cluster's storage this machine cannot read (no --storage shared)
        logging.getLogger(__name__).warning(
            "the best trial's checkpoint stays at %s: %s", saved[best].path, error
        )
    return best, files
