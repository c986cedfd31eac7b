"""Root typer app, the error boundary (one line, exit 1; traceback with --debug)."""

from __future__ import annotations

import importlib
import sys

import typer

from darwinmerge.cli.options import order_all
from darwinmerge.errors import DarwinError

app = typer.Typer(
    name="darwin",
    help="Breed a better language model out of two parent checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Subcommand modules; each defines ``register(app)``.
_COMMAND_MODULES = [
    "darwinmerge.cli.inspect_cmd",
    "darwinmerge.cli.merge_cmd",
    "darwinmerge.cli.eval_cmd",
    "darwinmerge.cli.zoo_cmd",
    "darwinmerge.cli.mri_cmd",
    "darwinmerge.cli.demo_cmd",
    "darwinmerge.cli.evolve_cmd",
    "darwinmerge.cli.health_cmd",
    "darwinmerge.cli.run_cmd",
    "darwinmerge.cli.report_cmd",
]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """``--debug`` is declared here for ``--help`` and parsing; :func:`main` reads it from
    ``sys.argv``, since errors raised while the arguments are parsed need it too."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)
    order_all(app)  # every --help: inputs, output, behaviour, performance


_register_all()


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        rc = app(standalone_mode=False)
    except DarwinError as exc:
        if debug:
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # usage errors (typer vendors its own click)
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
    # without standalone mode, click turns Ctrl-C into a returned 130 instead of raising
    if isinstance(rc, int) and rc != 0:
        if rc == 130:
            typer.echo("aborted", err=True)
        sys.exit(rc)
