"""``seqlm store tables``: browse the artifact store (also spelled ``seqlm ngram tables``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqlm.errors import SeqlmError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("store", help="browse the artifact store")
    commands = group.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    add_tables_command(commands)


def add_tables_command(commands: argparse._SubParsersAction) -> None:
    tables = commands.add_parser(
        "tables",
        help="list the count tables in the artifact store",
        description="List the pipeline's count tables (plain Parquet, one file per order): per "
        "shard over the shard's own type ids (with its vocab.parquet), merged over the type "
        "dictionary's ids (shards added since in layers added1/, added2/ …, which sum to the "
        "whole), and cut to a vocabulary's ids. Columns: store key, kind, corpus, order, layer, "
        "rows, bytes, path.",
    )
    tables.add_argument("--store", default="data/store", help="the store (default: data/store)")
    tables.add_argument("--json", action="store_true", help="print a JSON list")
    tables.set_defaults(func=tables_command)


def tables_command(args: argparse.Namespace) -> int:
    from seqlm.report import to_markdown
    from seqlm.stages import list_count_tables
    from seqlm.store import Store

    store = Path(args.store)
    if store.exists() and not store.is_dir():
        raise SeqlmError(f"--store {store}: not a directory")
    listing = list_count_tables(Store(store))
    if args.json:
        print(json.dumps(listing.to_dicts(), indent=2))
    elif listing.height:
        print(to_markdown(listing))
    else:
        print(f"no count tables in {args.store}")
    return 0
