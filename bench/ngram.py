"""Time seqlm's n-gram count, estimate and score on PTB against KenLM's recorded figures.

KenLM's ``lmplz``/``query`` binaries are not installed here: the peer figures are those recorded in
kenlm-ptb.md on a machine of the same kind. If the ``kenlm`` package is installed, its ARPA load +
score is also measured in this run.

    .venv/bin/python bench/ngram.py [--data ../shared/data/ptb] [--order 5]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from seqlm.corpus import load_corpus
from seqlm.evaluate import perplexity
from seqlm.ngram import NgramModel, count_ngrams, fit, read_arpa, write_arpa
from seqlm.ngram.estimate import first_seen
from seqlm.vocab import build_vocabulary

# kenlm-ptb.md, 5-gram: count_ngrams, lmplz (count + estimate + ARPA), query loading the ARPA.
KENLM = {"count": 0.59, "count+estimate": 1.91, "score (ARPA)": 0.84}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ptb"))
    parser.add_argument("--order", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="seqlm-bench-"))

    start = time.perf_counter()
    train = load_corpus(args.data, "whitespace", splits=["train"])["train"]
    vocab = build_vocabulary(train)
    stream = vocab.stream(train)
    tables = count_ngrams(stream, args.order, vocab.size)
    times["count"] = time.perf_counter() - start

    start = time.perf_counter()
    model = fit(tables, vocab, "kn", first_seen=first_seen(stream, vocab.size))
    write_arpa(model, work / "m.arpa")
    times["count+estimate"] = times["count"] + time.perf_counter() - start
    model.save(work / "model")

    test_lines = load_corpus(args.data, "whitespace", splits=["test"])["test"]
    start = time.perf_counter()
    loaded = read_arpa(work / "m.arpa")
    test = loaded.vocab.stream(test_lines)
    ppl = perplexity(loaded.score_stream(test), test)
    times["score (ARPA)"] = time.perf_counter() - start

    start = time.perf_counter()
    binary = NgramModel.load(work / "model")
    test = binary.vocab.stream(test_lines)
    perplexity(binary.score_stream(test), test)
    times["score (binary)"] = time.perf_counter() - start
    rss = peak_rss_mib()

    print(f"PTB modified KN {args.order}-gram: test perplexity {ppl.ppl:.7f}")
    print(f"n-grams per order: {' / '.join(f'{n:,}' for n in model.sizes)}")
    print(f"{'stage':<16}{'seqlm s':>9}{'KenLM s':>9}{'ratio':>8}")
    for stage, seconds in times.items():
        peer = KENLM.get(stage)
        ratio = f"{seconds / peer:.2f}" if peer else "-"
        print(f"{stage:<16}{seconds:>9.3f}{peer or float('nan'):>9.2f}{ratio:>8}")
    print(f"peak RSS {rss:.0f} MiB (lmplz 227 MiB); KenLM figures are recorded, not measured here")

    try:
        import kenlm
    except ImportError:
        print("kenlm package not installed: no measured peer")
        return
    start = time.perf_counter()
    peer = kenlm.Model(str(work / "m.arpa"))
    total = sum(peer.score(" ".join(t), bos=True, eos=True) for t in test_lines["tokens"].to_list())
    seconds = time.perf_counter() - start
    peer_ppl = 10 ** (-total / ppl.targets)
    print(f"kenlm package, ARPA load + score: {seconds:.3f} s, perplexity {peer_ppl:.7f}")


if __name__ == "__main__":
    main()
