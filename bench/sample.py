"""The n-gram sampler's speed and memory: this checkout against another one (a worktree of an
earlier commit), each case run in fresh processes, the two checkouts alternately, so that both
see the same load on a shared machine.

    python bench/sample.py [--base /tmp/base ...] [--rounds 3] [--case MODEL:WORDS ...]

A case draws WORDS tokens (seed 1) from MODEL, a saved model folder: the drawing's wall and CPU
time (the model's loading left out, the sampler's tables in), words a second by each, the
process's peak RSS, and a hash of the words, the same for both checkouts when the sampler's output
is unchanged. Default cases: 2M tokens of the PTB 5-gram and 400 of the 20M-token sample's 5-gram
(what bench/ngram.py leaves in bench/.scratch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "bench" / ".scratch"
CASES = [f"{SCRATCH}/corpora/ptb-kn5:2000000", f"{SCRATCH}/runs/20M/model:400"]


def draw(model_path: str, words: int) -> dict[str, float | str]:
    """One case in this process (the checkout on ``sys.path`` is the one measured)."""
    import numpy as np

    from seqlm.ngram.model import NgramModel

    model = NgramModel.load(Path(model_path))
    wall, cpu = time.perf_counter(), time.process_time()
    digest = hashlib.sha1()
    for block in model.sampler.blocks(words, seed=1):
        digest.update(np.ascontiguousarray(block, dtype=np.int32).tobytes())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": peak, "sha1": digest.hexdigest()[:12]}


def run(checkout: Path, case: str) -> dict[str, float | str]:
    model, words = case.rsplit(":", 1)
    env = os.environ | {"PYTHONPATH": str(checkout)}
    argv = [sys.executable, __file__, "--child", model, words]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", type=Path, action="append", default=[], help="another checkout (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", action="append", help="MODEL:WORDS (repeatable)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(draw(args.child[0], int(args.child[1]))))
        return
    checkouts = {"this": ROOT} | {path.name: path.resolve() for path in args.base}
    with open("/proc/loadavg") as load:
        print(f"load before: {load.read().split()[:3]}")
    for case in args.case or CASES:
        results: dict[str, list[dict]] = {name: [] for name in checkouts}
        for _ in range(args.rounds):
            for name, checkout in checkouts.items():
                results[name].append(run(checkout, case))
        words = int(case.rsplit(":", 1)[1])
        print(f"\n{case}")
        for name, runs in results.items():
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            print(
                f"  {name}: wall {wall:.3f} s ({words / wall / 1e6:.3f}M/s), cpu {cpu:.3f} s "
                f"({words / cpu / 1e6:.3f}M/s), peak {max(r['peak_mib'] for r in runs):.0f} MiB, "
                f"words {sorted({r['sha1'] for r in runs})}"
            )
        for name in list(results)[1:]:
            pairs = zip(results["this"], results[name], strict=True)
            ratios = [round(b["cpu_s"] / t["cpu_s"], 2) for t, b in pairs]
            print(f"  {name} cpu / this cpu, round by round: {ratios}")
    with open("/proc/loadavg") as load:
        print(f"\nload after: {load.read().split()[:3]}")


if __name__ == "__main__":
    main()
