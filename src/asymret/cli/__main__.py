"""``python -m asymret.cli``: the ``asymret`` command."""
from . import main

main()
