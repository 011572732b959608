"""``python -m hivemem`` runs the CLI."""

from hivemem.cli import main

main()
