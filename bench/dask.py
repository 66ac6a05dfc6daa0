"""The pipeline's counting and Kneser-Ney estimation (rnn.models=[], ngram.orders=[5]) on a
sampled corpus in shard files: the local executor against a Dask cluster of 1 and of 2 workers.

Each configuration runs in a fresh process of its own, with its own temporary Prefect server and
a fresh store, inside a Prefect flow, as ``seqlm run`` runs the stages: ``prepare`` (ingestion,
type dictionaries, vocabulary, per-shard counts, the merge) and ``fit`` (the unigram and the
5-gram), each timed; evaluation, MLflow and the comparison are left out. On the cluster the
merge and the estimate run partitioned (2 parts per worker thread), each part's call a task run
on a worker. Peak memory: ``ru_maxrss`` of the flow's process and of each worker process (a
worker that has only imported the pipeline holds ~320 MB).

    .venv/bin/python bench/dask.py [--corpus bench/.scratch/corpora/sample-20M-seed1.txt]
        [--tokens 2000000] [--shards 10] [--configs local,dask1,dask2]

The shard files (the corpus's first ``--tokens`` words in ``--shards`` files of contiguous
lines) are kept in ``bench/.scratch/dask-shards-<tokens>``; each run's figures go to
``bench/.scratch/dask-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from argparse import SUPPRESS
from pathlib import Path

# Run as a script, this file's folder comes first on the path, where it would shadow the dask
# package it measures.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

SCRATCH = Path(__file__).resolve().parent / ".scratch"
CORPUS = SCRATCH / "corpora" / "sample-20M-seed1.txt"
SETTINGS = ["rnn.models=[]", "ngram.orders=[5]", "corpus.tokenizer=whitespace"]


def write_shards(corpus: Path, tokens: int, shards: int) -> Path:
    """The corpus's first lines holding ``tokens`` words, in ``shards`` files of contiguous
    lines (made once)."""
    folder = SCRATCH / f"dask-shards-{tokens}-{shards}"
    if folder.is_dir():
        return folder
    lines, words = [], 0
    with corpus.open() as f:
        for line in f:
            if words >= tokens:
                break
            lines.append(line)
            words += len(line.split())
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bounds = [len(lines) * i // shards for i in range(shards + 1)]
    for i in range(shards):
        (tmp / f"shard{i:02d}.txt").write_text("".join(lines[bounds[i] : bounds[i + 1]]))
    tmp.rename(folder)
    return folder


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(config: str, shards: Path, store: Path) -> dict:
    """One configuration in this process: its phases' wall times and peak memory."""
    from flows.settings import apply_defaults

    apply_defaults()
    from flows.local_server import prefect_api

    with prefect_api():
        from distributed import Client, LocalCluster
        from prefect import flow

        from flows.executor import LOCAL_CLUSTER, partitions, task_runner
        from seqlm.config import load_config
        from seqlm.pipeline import corpus_sources, fit, prepare
        from seqlm.store import Store
        from tasks.stages import PrefectRunner

        @flow(name="bench-dask")
        def phases(address: str) -> dict:
            executor = [f"run.executor={'dask' if address else 'local'}"]
            cfg = load_config(None, [*SETTINGS, *executor, f"run.dask_address={address}"])
            with task_runner(cfg.run) as dask:
                runner = PrefectRunner(Store(store), dask, partitions(dask))
                start = time.perf_counter()
                data = prepare(runner, corpus_sources(shards, cfg), cfg)
                prepared = time.perf_counter()
                fit(runner, data, cfg)
                return {
                    "parts": runner.parts,
                    "prepare_s": prepared - start,
                    "fit_s": time.perf_counter() - prepared,
                }

        if config == "local":
            return phases("") | {"flow_peak_mib": peak_mib(), "worker_peak_mib": []}
        workers = int(config.removeprefix("dask"))
        cluster_kwargs = LOCAL_CLUSTER | {"n_workers": workers}
        with LocalCluster(**cluster_kwargs) as cluster, Client(cluster) as client:
            result = phases(cluster.scheduler_address)
            peaks = sorted(client.run(peak_mib).values())
        return result | {"flow_peak_mib": peak_mib(), "worker_peak_mib": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--configs", default="local,dask1,dask2")
    # One configuration, in a child process: its shard files' folder and its store.
    parser.add_argument("--one", nargs=3, metavar=("CONFIG", "SHARDS", "STORE"), help=SUPPRESS)
    args = parser.parse_args()
    if args.one:
        config, folder, store = args.one
        print(json.dumps(run_one(config, Path(folder), Path(store))))
        return
    shards = write_shards(args.corpus, args.tokens, args.shards)
    results = {}
    for config in args.configs.split(","):
        store = SCRATCH / "dask-store"
        shutil.rmtree(store, ignore_errors=True)
        command = [sys.executable, __file__, "--one", config, str(shards), str(store)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{config} failed:\n{done.stderr[-3000:]}")
        results[config] = json.loads(done.stdout.strip().splitlines()[-1])
        shutil.rmtree(store, ignore_errors=True)
    out = SCRATCH / f"dask-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"tokens": args.tokens, "shards": args.shards} | results, indent=1))
    base = results.get("dask1")
    print(
        "| config | parts | prepare s | fit s | total s | vs dask1 | flow peak MiB | workers' MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for config, r in results.items():
        total = r["prepare_s"] + r["fit_s"]
        ratio = f"{(base['prepare_s'] + base['fit_s']) / total:.2f}x" if base else "-"
        workers = ", ".join(f"{m:.0f}" for m in r["worker_peak_mib"]) or "-"
        print(
            f"| {config} | {r['parts']} | {r['prepare_s']:.1f} | {r['fit_s']:.1f} | {total:.1f} "
            f"| {ratio} | {r['flow_peak_mib']:.0f} | {workers} |"
        )
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
