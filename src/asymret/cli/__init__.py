"""The ``asymret`` command line: one subcommand per step, and ``demo`` which chains them.

A thin shell — parsing arguments, calling the public API, printing — one module per family of commands:
:mod:`.train` (models, train-encoder, fit-transform, train-query), :mod:`.embed` (embed, build-index,
upgrade-query), :mod:`.deploy` (export-query, serve), :mod:`.search` (search, evaluate), :mod:`.experiments`
(rerank-train, compare, run, demo).  :mod:`.common` holds the app, its one error path (every failure is one
``error:`` line, exit code 2) and what the commands share.
"""
from __future__ import annotations

from .common import app, main
# each module registers its commands on the app, in this order (the order `asymret --help` lists them)
from . import train, embed, deploy, search, experiments  # noqa: F401,E402

__all__ = ["app", "main"]
