"""``python -m pathoflash`` runs the CLI."""

from pathoflash.cli import main

main()
