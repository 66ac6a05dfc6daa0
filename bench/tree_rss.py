"""A command's wall time and the peak RSS of its whole process tree (the sum over its processes,
sampled every 0.2 s), with the anonymous part, and each process's own peak (VmHWM).

    python bench/tree_rss.py [--log rss.tsv] -- seqlm run CORPUS --set ...

The log has one line per sample: seconds since the start, the tree's RSS and its anonymous part
(MiB), the number of processes: what a stage's peak is read from, by its time in the command's
log.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_S = 0.2


def children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            found.setdefault(parent, []).append(int(entry.name))
    return found


def tree(root: int) -> list[int]:
    kids, out, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and VmHWM of a process, in bytes (none once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = ("VmRSS:", "RssAnon:", "VmHWM:")
    return {
        f[:-1]: int(line.split()[1]) << 10 for line in lines for f in fields if line.startswith(f)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="one line per sample (seconds, MiB, MiB, count)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    log = args.log.open("w") if args.log else None
    start = time.monotonic()
    process = subprocess.Popen(command)
    peak = peak_anon = 0
    own: dict[int, int] = {}
    while process.poll() is None:
        pids = tree(process.pid)
        sizes = [status(pid) for pid in pids]
        rss = sum(s.get("VmRSS", 0) for s in sizes)
        anon = sum(s.get("RssAnon", 0) for s in sizes)
        peak, peak_anon = max(peak, rss), max(peak_anon, anon)
        for pid, s in zip(pids, sizes, strict=True):
            own[pid] = max(own.get(pid, 0), s.get("VmHWM", 0))
        if log:
            print(
                f"{time.monotonic() - start:.1f}\t{rss >> 20}\t{anon >> 20}\t{len(pids)}", file=log
            )
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - start
    largest = max(own.values(), default=0)
    print(
        f"exit {process.returncode}, {wall:.1f} s, tree peak {peak / 2**30:.2f} GiB "
        f"(anonymous {peak_anon / 2**30:.2f} GiB); largest process {largest / 2**30:.2f} GiB",
        file=sys.stderr,
    )
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
