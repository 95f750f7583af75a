"""Sweeps: is it the knob or the seed? Trials of a grid of config knobs, each trained for several
seeds in one vmapped call, on Ray Tune (``pip install -e ".[sweep]"``; ``carlab sweep``).

Built on :mod:`carlab.learn`. Modules: ``grid`` (knobs, values, seeds and steps from ``--set`` or a
YAML file, as trials), ``tune`` (the trials on a local Ray or a cluster; needs Ray), ``progress`` (the
driver's Tune callback: rows as trials finish, a tqdm bar), ``results`` (``results.csv``, a figure
per knob, the best trial), ``compare`` (two values of a knob over seeds: curves and a bootstrap
interval, notebook 6; no Ray needed)::

    from carlab.sweep import make_sweep, run_sweep
    sweep = make_sweep(knobs={"agent.actor_lr": ["1e-4", "3e-4"]}, seeds="0-3", steps=50_000, preset="tiny")
    outcome = run_sweep(sweep, "sweeps/actor_lr")      # outcome.results: sweeps/actor_lr/results.csv
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=("grid", "tune", "progress", "results", "compare"),
    names={
        "Sweep": "grid",
        "make_sweep": "grid",
        "load_sweep": "grid",
        "parse_set": "grid",
        "trial_config": "grid",
        "trial_name": "grid",
        "run_sweep": "tune",
        "ClusterError": "tune",
        "Outcome": "tune",
        "read_results": "results",
        "plot_knob": "results",
        "best_trial": "results",
        "knob_runs": "compare",
        "learning_rate_name": "compare",
        "by_value": "compare",
        "scores": "compare",
        "median_difference_interval": "compare",
        "plot_curves": "compare",
    },
)
