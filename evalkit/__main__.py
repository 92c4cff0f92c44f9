"""``python -m evalkit``: the same as the ``evalkit`` command."""

from .cli import main

main(prog_name="evalkit")
