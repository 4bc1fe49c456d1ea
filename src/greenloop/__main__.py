"""``python -m greenloop``."""

from greenloop._entry import main

main()
