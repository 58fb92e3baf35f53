"""`lab`: the researcher's front door. Each subcommand calls the same lab functions the
Dagster assets call, on what `make demo` built under $LAB_DATA_DIR.

    lab ask "question"            answer from the paper library, verified claim by claim
    lab recommend --user 42       top films for a MovieLens user, or --likes "Heat, Fargo"
    lab render --checkpoint PATH  a trained D-NeRF scene as an orbit video
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lab_pipelines.cli import ask, recommend, render
from lab_pipelines.cli.errors import LabInputError

COMMANDS = {"ask": ask, "recommend": recommend, "render": render}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except LabInputError as error:
        # A missing index, checkpoint or title is the user's to fix: one line, no traceback.
        print(f"lab {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
