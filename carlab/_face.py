"""How each subpackage's ``__init__`` shows its public API without importing it all up front.

Each face (:mod:`carlab.sim`, :mod:`carlab.learn`, :mod:`carlab.course`, :mod:`carlab.lab`) lists
its names once, mapped to the module that defines them; a name is imported the first time it is
used (PEP 562). So ``from carlab.learn.config import PRESETS`` in the CLI does not pull in JAX, and
``from carlab.lab import Trainer`` does not pull in ipywidgets, while ``from carlab.sim import env,
make_track`` works as if everything had been imported eagerly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_face(
    package: str, modules: tuple[str, ...], names: Mapping[str, str]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``.

    Args:
        package: the subpackage's dotted name (``"carlab.sim"``).
        modules: its public submodules (``"env"`` for ``carlab.sim.env``).
        names: public name -> the submodule (relative to ``package``) that defines it.
    """
    clash = set(modules) & set(names)
    if clash:
        raise ValueError(f"{package}: {sorted(clash)} are both a module and a name")
    public = sorted({*modules, *names})

    def getattr_(name: str):
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return public, getattr_, lambda: public
