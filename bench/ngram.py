"""Whole commands of seqlm and KenLM, timed in the same run: wall time and peak RSS of each process.

Each measured command is a process of its own (seqlm's console script beside this interpreter,
KenLM's binaries), timed from its fork to its exit by a small launcher whose ``os.wait4`` gives
the peak RSS of that process. Pairs, same corpus, same order, same memory budget:

    estimate    seqlm ngram estimate CORPUS B --arpa OUT   lmplz B < CORPUS > OUT
    count       seqlm ngram count CORPUS B --out DIR       count_ngrams B --write_vocab_list V
    score ARPA  seqlm ngram score ARPA TEXT --json         query -v summary ARPA < TEXT
    score bin   seqlm ngram score SAVED TEXT --json        query -v summary PROBING < TEXT

where B is ``-o 5 -S 4G -T TMP`` (the order, the memory budget, the spill folder) for both.

The scored model is seqlm's estimate of the corpus (its ARPA file; the folder ``--save`` writes;
``build_binary``'s probing file of the same ARPA). Rounds are interleaved: in each round every pair
runs both commands, alternating which goes first. The perplexities the two tools give the scored
text are checked to agree (also lmplz's model against seqlm's, both scored by ``query``).

Corpora: ``ptb`` (train; its test text is scored) and sampled ones (``2M``, ``20M``, ``100M``
words) drawn by ``seqlm ngram sample`` from a Kneser-Ney 5-gram of PTB train, scored on a 2M-word
sample of another seed. lmplz refuses a literal ``<unk>``, ``<s>`` or ``</s>`` in its input, so
every corpus is read through a copy that spells them ``<rare>``, ``<S>``, ``</S>`` (PTB spells
its cut words ``<unk>``): both tools read the same bytes. Corpora and KenLM's build are kept in
the scratch folder and reused; each run's timings go to ``ngram-<time>.json`` there.

    python bench/ngram.py --sizes ptb,2M --rounds 3 --memory 4G [--commands estimate,count,score]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from kenlm_tools import kenlm_tools

from seqlm.errors import SeqlmError
from seqlm.files import atomic_path, atomic_write_text
from seqlm.ngram.budget import parse_memory

ROOT = Path(__file__).resolve().parents[1]
SEQLM = Path(sys.executable).parent / "seqlm"
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
COMMANDS = ("estimate", "count", "score")
SAMPLE_ORDER = 5  # the model the sampled corpora are drawn from
CORPUS_SEED, TEXT_SEED, TEXT_WORDS = 1, 2, 2_000_000
RESERVED = ((b"<unk>", b"<rare>"), (b"</s>", b"</S>"), (b"<s>", b"<S>"))
UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}
TOLERANCE = 1e-6  # relative: KenLM computes in float32, seqlm in float64
# Each measured command is started by this small launcher, not by the bench: a child's peak RSS
# counts the pages of the process it was forked from (the bench holds Polars, and the launcher
# ≈5 MiB). It times fork to exit with perf_counter and writes "seconds peak_kib exit_code".
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    except OSError as error:
        print(sys.argv[2], error, file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""
KENLM_NAMES = {
    "estimate": "lmplz",
    "count": "count_ngrams",
    "score ARPA": "query (ARPA)",
    "score binary": "query (probing)",
}
SEQLM_NAMES = {
    "estimate": "ngram estimate",
    "count": "ngram count",
    "score ARPA": "ngram score (ARPA)",
    "score binary": "ngram score (--save folder)",
}


@dataclass(frozen=True)
class Command:
    argv: list[str]
    stdout: Path  # stderr goes beside it, as <stdout>.log
    stdin: Path | None = None


@dataclass(frozen=True)
class Pair:
    name: str
    seqlm: Command
    kenlm: Command


@dataclass(frozen=True)
class Corpus:
    label: str
    train: Path
    text: Path


def measure(command: Command) -> dict[str, float]:
    """Run ``command`` through ``LAUNCHER``: its wall time and peak RSS (KiB)."""
    log = command.stdout.with_name(command.stdout.name + ".log")
    usage = command.stdout.with_name(command.stdout.name + ".rusage")
    usage.unlink(missing_ok=True)
    with (
        open(command.stdin or os.devnull, "rb") as stdin,
        command.stdout.open("wb") as stdout,
        log.open("wb") as stderr,
    ):
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(usage), *command.argv]
        subprocess.run(launcher, stdin=stdin, stdout=stdout, stderr=stderr, env=ENV, check=False)
    seconds, peak, code = usage.read_text().split() if usage.exists() else ("0", "0", "launcher")
    usage.unlink(missing_ok=True)
    if code != "0":
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise SeqlmError(f"{' '.join(command.argv)} exited {code}: {tail[0]} ({log})")
    return {"seconds": float(seconds), "peak_kib": int(peak)}


def kenlm_safe(source: Path, target: Path) -> Path:
    """``source`` with the words lmplz refuses respelled, written once to ``target``."""
    if not target.exists():
        data = source.read_bytes()
        for word, spelling in RESERVED:
            data = data.replace(word, spelling)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return target


def words(label: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", label)
    if not match:
        raise SeqlmError(f"--sizes: {label!r} is neither ptb nor a word count such as 2M or 100M")
    return int(match[1]) * UNITS.get(match[2], 1)


def sample(model: Path, count: int, seed: int, target: Path) -> Path:
    """``count`` words drawn from the saved model ``model``, written once to ``target``."""
    if not target.exists():
        raw = target.with_name(target.name + ".raw")
        argv = [str(SEQLM), "ngram", "sample", str(model), "--words", str(count)]
        measure(Command([*argv, "--seed", str(seed), "--out", str(raw)], raw.with_suffix(".out")))
        kenlm_safe(raw, target)
        raw.unlink()
    return target


def corpora(sizes: list[str], ptb: Path, scratch: Path) -> list[Corpus]:
    folder = scratch / "corpora"
    folder.mkdir(parents=True, exist_ok=True)
    train = kenlm_safe(ptb / "ptb.train.txt", folder / "ptb.train.txt")
    found = [Corpus("ptb", train, kenlm_safe(ptb / "ptb.test.txt", folder / "ptb.test.txt"))]
    if any(size != "ptb" for size in sizes):
        model = folder / f"ptb-kn{SAMPLE_ORDER}"
        if not model.exists():
            print(f"estimating {model} to sample from", file=sys.stderr)
            arpa = ["--arpa", str(model.with_suffix(".arpa")), "--save", str(model)]
            source = str(ptb / "ptb.train.txt")  # its <unk> a word, drawn and respelled <rare>
            argv = [str(SEQLM), "ngram", "estimate", source, "-o", str(SAMPLE_ORDER), *arpa]
            measure(Command(argv, model.with_suffix(".out")))
        text = folder / f"sample-{TEXT_WORDS // 10**6}M-seed{TEXT_SEED}.txt"
        for size in sizes:
            if size != "ptb":
                print(f"sampling {size} words (reused when present)", file=sys.stderr)
                target = folder / f"sample-{size}-seed{CORPUS_SEED}.txt"
                sample(model, words(size), CORPUS_SEED, target)
                found.append(Corpus(size, target, sample(model, TEXT_WORDS, TEXT_SEED, text)))
    return [corpus for corpus in found if corpus.label in sizes]


def pairs(
    corpus: Corpus,
    commands: list[str],
    args: argparse.Namespace,
    tools: dict[str, Path],
    work: Path,
) -> list[Pair]:
    """The measured pairs of ``corpus``; the score pairs' models are estimated here, untimed."""
    seqlm, train, order, memory = str(SEQLM), str(corpus.train), str(args.order), args.memory
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # The same order, memory budget and spill folder for both tools; and lmplz's fallback
    # discounts for both, which a sampled corpus needs (every word follows several others, so no
    # unigram has adjusted count 1) and PTB does not.
    budget = ["-o", order, "-S", memory, "-T", f"{tmp}/"]
    fallback = ["--discount_fallback"]
    found = []
    if "estimate" in commands:
        argv = [seqlm, "ngram", "estimate", train, *budget, *fallback]
        found.append(
            Pair(
                "estimate",
                Command([*argv, "--arpa", str(work / "seqlm.arpa")], work / "seqlm-estimate.out"),
                Command(
                    [str(tools["lmplz"]), *budget, *fallback],
                    work / "lmplz.arpa",
                    corpus.train,
                ),
            )
        )
    if "count" in commands:
        argv = [seqlm, "ngram", "count", train, *budget]
        kenlm = [str(tools["count_ngrams"]), *budget]
        found.append(
            Pair(
                "count",
                Command([*argv, "--out", str(work / "seqlm-counts")], work / "seqlm-count.out"),
                Command(
                    [*kenlm, "--write_vocab_list", str(work / "kenlm.vocab")],
                    work / "kenlm.counts",
                    corpus.train,
                ),
            )
        )
    if "score" in commands:
        arpa, saved, probing = work / "model.arpa", work / "model", work / "model.probing"
        print(f"{corpus.label}: estimating the scored model (untimed)", file=sys.stderr)
        argv = [seqlm, "ngram", "estimate", train, *budget, *fallback]
        measure(Command([*argv, "--arpa", str(arpa), "--save", str(saved)], work / "model.out"))
        binary = [str(tools["build_binary"]), "probing", str(arpa), str(probing)]
        measure(Command(binary, work / "build_binary.out"))
        query = [str(tools["query"]), "-v", "summary"]
        for name, model, suffix in (
            ("score ARPA", arpa, "arpa"),
            ("score binary", saved, "binary"),
        ):
            found.append(
                Pair(
                    name,
                    Command(
                        [seqlm, "ngram", "score", str(model), str(corpus.text), "--json"],
                        work / f"seqlm-score-{suffix}.json",
                    ),
                    Command(
                        [*query, str(probing if suffix == "binary" else arpa)],
                        work / f"query-{suffix}.txt",
                        corpus.text,
                    ),
                )
            )
    return found


def rounds(label: str, found: list[Pair], count: int) -> dict[str, dict[str, list[dict]]]:
    """Every pair ``count`` times, the first tool alternating by round and pair."""
    runs: dict[str, dict[str, list[dict]]] = {
        pair.name: {"seqlm": [], "kenlm": []} for pair in found
    }
    for round_ in range(count):
        for index, pair in enumerate(found):
            order = ("seqlm", "kenlm") if (round_ + index) % 2 == 0 else ("kenlm", "seqlm")
            for position, tool in enumerate(order):
                run = measure(getattr(pair, tool)) | {"round": round_ + 1, "first": position == 0}
                runs[pair.name][tool].append(run)
                print(
                    f"[{label} {round_ + 1}/{count}] {pair.name:<12} {tool:<5} "
                    f"{run['seconds']:8.3f} s {run['peak_kib'] / 1024:8.0f} MiB",
                    file=sys.stderr,
                )
    return runs


def query_perplexity(output: Path) -> float:
    match = re.search(r"Perplexity including OOVs:\s*(\S+)", output.read_text())
    if not match:
        raise SeqlmError(f"{output}: no 'Perplexity including OOVs:' line in query's output")
    return float(match[1])


def checks(
    found: list[Pair], tools: dict[str, Path], text: Path, work: Path
) -> list[tuple[str, float, str, float]]:
    """(what, seqlm's figure, what, KenLM's figure) of each pair that can be checked: the
    perplexities of the scored text, and the vocabulary sizes of the counts."""
    names = {pair.name for pair in found}
    out = []
    for suffix, name in (("arpa", "score ARPA"), ("binary", "score binary")):
        if name in names:
            ours = json.loads((work / f"seqlm-score-{suffix}.json").read_text())["perplexity"]
            theirs = query_perplexity(work / f"query-{suffix}.txt")
            out.append((f"perplexity, seqlm {name}", ours, "query, same model", theirs))
    if "estimate" in names:
        # Both estimates scored by query, so that the two estimators are what is compared.
        scored = {}
        for arpa in ("seqlm.arpa", "lmplz.arpa"):
            query = [str(tools["query"]), "-v", "summary", str(work / arpa)]
            measure(Command(query, work / f"query-{arpa}.txt", text))
            scored[arpa] = query_perplexity(work / f"query-{arpa}.txt")
        out.append(
            (
                "perplexity, query on seqlm's estimate",
                scored["seqlm.arpa"],
                "on lmplz's",
                scored["lmplz.arpa"],
            )
        )
    if "count" in names:
        ours = (
            pl.scan_parquet(work / "seqlm-counts" / "vocab.parquet")
            .select(pl.len())
            .collect()
            .item()
        )
        theirs = (work / "kenlm.vocab").read_bytes().rstrip(b"\0").count(b"\0") + 1
        out.append(("vocabulary, seqlm count", ours, "count_ngrams", theirs))
    return out


def table(results: dict[str, dict]) -> str:
    """One row per corpus and pair: median wall seconds, max peak RSS (MiB), seqlm/KenLM."""
    lines = [
        "| corpus | seqlm | KenLM | seqlm s | KenLM s | ratio | seqlm MiB | KenLM MiB | ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, result in results.items():
        for name, runs in result["runs"].items():
            wall = [statistics.median(r["seconds"] for r in runs[t]) for t in ("seqlm", "kenlm")]
            peak = [max(r["peak_kib"] for r in runs[t]) / 1024 for t in ("seqlm", "kenlm")]
            cells = [
                label,
                f"`{SEQLM_NAMES[name]}`",
                f"`{KENLM_NAMES[name]}`",
                *(f"{x:.3f}" for x in wall),
                f"{wall[0] / wall[1]:.2f}",
                *(f"{x:,.0f}" for x in peak),
                f"{peak[0] / peak[1]:.2f}",
            ]
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def agree(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= TOLERANCE * abs(theirs)


def default_ptb() -> Path:
    candidates = [ROOT.parent / "shared/data/ptb", ROOT / "data/ptb"]
    return next((path for path in candidates if path.exists()), candidates[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="ptb", help="ptb and/or word counts: ptb,2M,20M,100M")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--memory", default="4G", help="budget of both tools: --memory / -S")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="of estimate,count,score")
    parser.add_argument("--order", type=int, default=5, help="n-gram order (default 5)")
    parser.add_argument("--ptb", type=Path, default=default_ptb(), help="folder of ptb.*.txt")
    parser.add_argument(
        "--scratch", type=Path, default=ROOT / "bench/.scratch", help="corpora, builds, outputs"
    )
    parser.add_argument(
        "--kenlm-bin", type=Path, help="folder of lmplz, query, build_binary, count_ngrams"
    )
    args = parser.parse_args()
    try:
        run(args)
    except SeqlmError as error:
        sys.exit(f"bench/ngram.py: {error}")


def prepare(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The sizes and commands asked for, once the settings are checked and seqlm's bytecode is
    compiled as an installed package has it (pip compiles on install): a tree just edited, or
    run with PYTHONDONTWRITEBYTECODE set, would compile its modules in every timed start-up."""
    sizes = args.sizes.split(",")
    commands = args.commands.split(",")
    if unknown := set(commands) - set(COMMANDS):
        raise SeqlmError(
            f"--commands: {', '.join(sorted(unknown))} not among {', '.join(COMMANDS)}"
        )
    if args.rounds < 1:
        raise SeqlmError(f"--rounds: {args.rounds} is not a positive count")
    parse_memory(args.memory, "--memory")
    for size in sizes:
        if size != "ptb":
            words(size)
    if not (args.ptb / "ptb.train.txt").exists():
        raise SeqlmError(f"--ptb {args.ptb}: no ptb.train.txt there")
    if not SEQLM.exists():
        raise SeqlmError(
            f"no seqlm console script beside {sys.executable}: install seqlm in this environment"
        )
    for package in ("seqlm", "flows"):
        compileall.compile_dir(ROOT / package, quiet=1)
    return sizes, commands


def run(args: argparse.Namespace) -> None:
    sizes, commands = prepare(args)
    tools = kenlm_tools(args.kenlm_bin, args.scratch)
    args.scratch.mkdir(parents=True, exist_ok=True)
    idle = measure(Command([str(shutil.which("true"))], args.scratch / "true.out"))["peak_kib"]
    started = time.strftime("%Y%m%d-%H%M%S")
    load = os.getloadavg()
    results: dict[str, dict] = {}
    failed = []
    for corpus in corpora(sizes, args.ptb, args.scratch):
        work = args.scratch / "runs" / corpus.label
        work.mkdir(parents=True, exist_ok=True)
        found = pairs(corpus, commands, args, tools, work)
        runs = rounds(corpus.label, found, args.rounds)
        checked = checks(found, tools, corpus.text, work)
        failed += [
            f"{corpus.label}: {a} {x} against {b} {y}" for a, x, b, y in checked if not agree(x, y)
        ]
        results[corpus.label] = {
            "train": str(corpus.train),
            "text": str(corpus.text),
            "commands": {
                pair.name: {"seqlm": pair.seqlm.argv, "kenlm": pair.kenlm.argv} for pair in found
            },
            "runs": runs,
            "checks": [
                {"seqlm": a, "value": x, "kenlm": b, "kenlm_value": y} for a, x, b, y in checked
            ],
        }
        for what, ours, peer, theirs in checked:
            verdict = "agree" if agree(ours, theirs) else "DISAGREE"
            print(f"{corpus.label}: {what} {ours:.10g}, {peer} {theirs:.10g}: {verdict}")
    version = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    record = {
        "started": started,
        "commit": subprocess.run(version, capture_output=True, text=True).stdout.strip(),
        "cpus": os.cpu_count(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "idle_peak_kib": idle,
        "args": {key: str(value) for key, value in vars(args).items()},
        "tools": {name: str(path) for name, path in tools.items()},
        "corpora": results,
    }
    out = args.scratch / f"ngram-{started}.json"
    atomic_write_text(out, json.dumps(record, indent=1))
    print(
        f"\n{args.order}-grams, --memory/-S {args.memory}, {args.rounds} rounds interleaved: "
        f"median wall, max peak RSS (a process doing nothing: {idle / 1024:.1f} MiB), "
        f"ratio seqlm/KenLM (load {load[0]:.2f}; raw runs in {out})\n"
    )
    print(table(results))
    if failed:
        raise SeqlmError("the two tools disagree: " + "; ".join(failed))


if __name__ == "__main__":
    main()
