"""``python -m meshlab.mounting mount-nfs ...``: the same as ``meshlab mount-nfs ...``, started faster.

``mount_nfs`` spawns the FUSE daemon this way because ``meshlab.cli`` imports every area's commands
(aiohttp among them, ~0.3 s) and a pod waits for its mounts.
"""

from __future__ import annotations

import argparse
import sys

from meshlab.errors import MeshlabError
from meshlab.mounting.commands import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlab.mounting")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MeshlabError as err:
        print(f"meshlab: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
