"""The one place that imports optional modules which register into the library's
registries by side effect (task sources, probe sets).

Registries that may be asked for a name only a plug-in provides call
:func:`load_plugins` lazily, on a miss (``evaluate.tasks.load_tasks``,
``mri.probes.resolve_probes``); no library module imports a plug-in directly.
"""

from __future__ import annotations

import importlib

__all__ = ["PLUGIN_MODULES", "load_plugins"]

#: Modules that register something when imported, with what they register.
PLUGIN_MODULES: dict[str, str] = {
    "darwinmerge.evaluate.lmeval_source": "task source 'lmeval' (lm-eval harness, optional)",
    "darwinmerge.zoo.tasks": "task source 'zoo'",
    "darwinmerge.zoo.probes": "probe set 'zoo' (MRI)",
    "darwinmerge.mri.revival": "scan reader 'mri' (dead experts for revive:)",
}

_loaded: dict[str, bool] = {}


def load_plugins() -> dict[str, bool]:
    """Import every module of :data:`PLUGIN_MODULES` once; returns module -> loaded.

    A plug-in module that is not installed is skipped (False); any other import error
    is raised, so a broken plug-in is never silently missing.
    """
    for module in PLUGIN_MODULES:
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            _loaded[module] = False
        else:
            _loaded[module] = True
    return dict(_loaded)
