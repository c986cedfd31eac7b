"""The one ``darwin`` command. Each subcommand lives in its own module under ``cli/``
and only parses, builds a config and calls the library."""

from darwinmerge.cli.app import app, main

__all__ = ["app", "main"]
