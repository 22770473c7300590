"""Shared pieces of the figure configs (fig5.py, fig9.py, fig10.py, fig11.py, ablation_s0.py,
ablation_optimizer.py): the base reconstruction config of each size and the ``figure`` section.

Every figure config takes an optional size after a colon: ``--config experiments/configs/fig9.py`` (the 64 x 64
GroEL-GroES data, experiments/configs/groel64_data.py) or ``--config experiments/configs/fig9.py:tiny`` (the
tiny set of experiments/configs/tiny_data.py: the test suite runs each figure this way, end to end).
"""

import ml_collections

from experiments.configs import groel64_is, tiny


def base(size: str):
    if size in ("", "groel64"):
        c = groel64_is.get_config()
        c.stop.max_minutes = 20.0  # every run of every figure: the same wall-time budget (2-core CPU)
        return c
    if size == "tiny":
        c = tiny.get_config()
        c.schedule.iterations_per_level = 5
        c.stop.max_iterations = 10
        c.output.save_map_every = 2
        c.output.heldout_every = 5
        c.output.checkpoint_every = 5
        c.baselines.em_top_poses = 4
        return c
    raise ValueError(f"unknown size {size!r} (groel64, tiny)")


def with_figure(c, name: str, title: str, kind: str, runs: list, **extra):
    c.figure = ml_collections.ConfigDict()
    c.figure.name = name
    c.figure.title = title
    c.figure.kind = kind
    c.figure.runs = list(runs)
    for key, value in extra.items():
        c.figure[key] = value
    return c


def run(label: str, method: str = "sagd", *overrides: dict) -> dict:
    """A ``figure.runs`` entry: its label, method (``sagd``, ``projection_matching``, ``em``) and config overrides
    (``{"key.path": value}``), merged from the override groups given."""
    if method not in ("sagd", "projection_matching", "em"):
        raise ValueError(f"figure run {label!r}: method {method!r} is not sagd, projection_matching or em")
    merged = {}
    for group in overrides:
        merged.update(group)
    return {"label": label, "method": method, "overrides": merged}
