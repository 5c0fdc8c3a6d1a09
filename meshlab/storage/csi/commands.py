"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's subcommands to ``meshlab``'s parser (none yet)."""
