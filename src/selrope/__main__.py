"""``python -m selrope`` runs the command line."""

from selrope.cli import main

main()
