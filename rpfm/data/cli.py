"""``rpfm data``: the ``synth`` and ``to-lmdb`` subcommands, registered in one place so the data modules do not
import each other for their command lines."""
from __future__ import annotations

import argparse
from typing import Any


def add_cli(subparsers: Any) -> argparse._SubParsersAction:
    """Register ``data synth`` and ``data to-lmdb`` on the top-level ``subparsers``; returns the ``data`` group."""
    from .lmdb_convert import add_cli as add_lmdb_cli
    from .synthetic import add_synth_cli

    data = subparsers.add_parser("data", help="data sets: generate the synthetic benchmark, convert to LMDB",
                                 description="Data set tools.")
    sub = data.add_subparsers(dest="data_command", required=True)
    add_synth_cli(sub)
    add_lmdb_cli(sub)
    return sub
