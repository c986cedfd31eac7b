"""What every command shares: its ``--help`` lists options in one order (inputs, output,
behaviour, performance), and a folder it writes is given by ``--out`` (commands whose
output is positional, ``darwin merge CONFIG OUT`` as mergekit users type it, take both).

The order is one table (:data:`OPTION_PANELS`, by long option name) applied to every
registered command by :func:`order_all`; an option it does not name is behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

from darwinmerge.errors import ConfigError

__all__ = ["OPTION_PANELS", "PANELS", "OrderedCommand", "order_all", "output_folder"]

INPUTS, OUTPUT, BEHAVIOUR, PERFORMANCE = "Inputs", "Output", "Behaviour", "Performance"
PANELS = (INPUTS, OUTPUT, BEHAVIOUR, PERFORMANCE)
HELP = "Help"

#: long option name -> help panel; any other option is behaviour
OPTION_PANELS: dict[str, str] = {
    # what the command reads
    "--parents": INPUTS,
    "--base": INPUTS,
    "--probes": INPUTS,
    "--tasks": INPUTS,
    "--split": INPUTS,
    "--test-fraction": INPUTS,
    "--limit": INPUTS,
    "--tokenizer": INPUTS,
    "--mri": INPUTS,
    "--recipe": INPUTS,
    "--zoo": INPUTS,
    "--allow-pickle": INPUTS,
    # what it writes and how
    "--out": OUTPUT,
    "--force": OUTPUT,
    "--shard-size": OUTPUT,
    "--screenshot": OUTPUT,
    "--width": OUTPUT,
    "--wide": OUTPUT,
    "--json": OUTPUT,
    "--tensors": OUTPUT,
    "--export-mergekit": OUTPUT,
    # where and how fast it runs
    "--device": PERFORMANCE,
    "--dtype": PERFORMANCE,
    "--backend": PERFORMANCE,
    "--threads": PERFORMANCE,
    "--batch-size": PERFORMANCE,
    "--page-cache": PERFORMANCE,
    "--workers": PERFORMANCE,
    "--ray-address": PERFORMANCE,
    "--swap-budget-mib": PERFORMANCE,
    "--swap-components": PERFORMANCE,
}


def _is_argument(param: Any) -> bool:
    return isinstance(param, TyperArgument)  # typer's own click: not the click package's


def _long_name(param: Any) -> str:
    names = [o for o in param.opts if o.startswith("--")]
    return names[0] if names else param.opts[0]


def panel_of(param: Any) -> str:
    """The help panel of a click option."""
    return OPTION_PANELS.get(_long_name(param), BEHAVIOUR)


def order_options(command: Any) -> None:
    """Give each option of ``command`` its panel and sort the options by panel (the
    arguments first, as written; within a panel, the options keep their order)."""
    for param in command.params:
        if not _is_argument(param):
            param.rich_help_panel = panel_of(param)
    command.params.sort(key=lambda p: -1 if _is_argument(p) else PANELS.index(panel_of(p)))


class OrderedCommand(TyperCommand):
    """A typer command whose options are listed by panel (:func:`order_options`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        order_options(self)

    def get_help_option(self, ctx: Any) -> Any:
        """``--help`` in a panel of its own after the others (not first, alone)."""
        option = super().get_help_option(ctx)
        if option is not None:
            option.rich_help_panel = HELP
        return option


def order_all(app: typer.Typer) -> None:
    """Make every command of ``app`` and of its sub-apps an :class:`OrderedCommand`."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = OrderedCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            order_all(group.typer_instance)


def output_folder(
    positional: Path | None, option: Path | None, overrides: list[str] | None = None
) -> tuple[Path, list[str]]:
    """The output folder of a command that takes it as ``OUT`` or ``--out``, and the
    ``key=value`` overrides. With ``--out``, a positional ``key=value`` is an override
    (``darwin merge CONFIG --out DIR seed=3``); both folders given must be the same."""
    extra = list(overrides or [])
    if option is not None and positional is not None:
        if positional.resolve() == option.resolve():
            positional = None
        elif "=" in str(positional):
            extra.insert(0, str(positional))
            positional = None
        else:
            raise ConfigError(
                f"two output folders: OUT {positional} and --out {option}; give one of them"
            )
    out = option if option is not None else positional
    if out is None:
        raise ConfigError("no output folder: give OUT or --out DIR")
    return out, extra
