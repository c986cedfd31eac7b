"""``python -m darwinmerge.cli`` runs the ``darwin`` command."""

from darwinmerge.cli.app import main

main()
