"""``python -m corral`` runs the ``corral`` command."""

from corral.app.cli import main

main()
