"""``python -m greenloop``."""

from greenloop.cli import main

main()
