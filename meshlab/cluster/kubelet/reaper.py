"""The reaper: kills a kubelet's container process groups once the kubelet's process is gone.

``PR_SET_PDEATHSIG`` takes down a container's main process when the supervisor dies, even by SIGKILL, but
not what that process started. The kubelet runs this small script (standard library only, ``python -I
-S``) in a session of its own and tells it, on its stdin, about each group it starts (``+<pgid>``) and
stops (``-<pgid>``). End of file means the kubelet's process has ended, cleanly or not: every group still
listed is killed with SIGKILL, and the reaper exits.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the kubelet's end of the pipe ends this process
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line[:1] == b"+":
            groups.add(pgid)
        elif line[:1] == b"-":
            groups.discard(pgid)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    main()
