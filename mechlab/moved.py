"""Old import paths that keep working: each answers with the object from its new home and a
DeprecationWarning that names that home. Two kinds:

- names that moved to another module (`moved_names`, a module's PEP 562 `__getattr__`), e.g.
  `mechlab.cli.read_prompts` -> `mechlab.io.read_prompts`;
- modules that moved (`MOVED_MODULES`), e.g. `import mechlab.model` -> `mechlab.scratch.model`:
  the first layout step moved them into the layers' packages.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable

# old module -> its new home
MOVED_MODULES = {
    "mechlab.ablation": "mechlab.analysis.ablation",
    "mechlab.artifacts": "mechlab.present.artifacts",
    "mechlab.attention": "mechlab.analysis.attention",
    "mechlab.check": "mechlab.scratch.check",
    "mechlab.distributed": "mechlab.workflows.distributed",
    "mechlab.dla": "mechlab.analysis.dla",
    "mechlab.heads": "mechlab.analysis.heads",
    "mechlab.lens": "mechlab.analysis.lens",
    "mechlab.loading": "mechlab.models.loading",
    "mechlab.model": "mechlab.scratch.model",
    "mechlab.patching": "mechlab.analysis.patching",
    "mechlab.plots": "mechlab.present.plots",
    "mechlab.report": "mechlab.workflows.report",
    "mechlab.tokens": "mechlab.analysis.tokens",
    "mechlab.training": "mechlab.scratch.training",
    "mechlab.tuned_lens": "mechlab.analysis.tuned_lens",
    "mechlab.views": "mechlab.present.views",
}


def moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}: import it from there", DeprecationWarning, stacklevel=3)


def moved_names(module: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module's `__getattr__` for the names that moved out of it: {name: new module}."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        moved(f"{module}.{name}", f"{names[name]}.{name}")
        return getattr(importlib.import_module(names[name]), name)

    __getattr__.moved = names  # type: ignore[attr-defined]  # what moved where, for the tests
    return __getattr__


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as a thin module whose attributes are the new module's."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # the default: an empty module, filled in below

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        moved(module.__name__, new)
        target = importlib.import_module(new)
        module.__doc__ = f"Moved to {new} (this path is deprecated)."
        module.__dict__["__getattr__"] = lambda name: getattr(target, name)
        module.__dict__["__all__"] = [n for n in vars(target) if not n.startswith("_")]


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
