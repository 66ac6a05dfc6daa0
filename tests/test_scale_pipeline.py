"""The merged and cut count tables within a tiny ``ngram.memory``: read in batches, summed in
sorted runs spilled to disk, they equal those built with room to spare and a full recount."""

from __future__ import annotations

import numpy as np

from seqlm import corpus, stages
from seqlm.config import load_config
from seqlm.ngram import count_ngrams, read_tables
from seqlm.store import Store
from tests.helpers import assert_merged_tables_recount, write_lines

TINY = "316M"  # 16M of working memory over the baseline: batches of ~13k rows, spilled runs
ROOMY = "8G"


def corpus_files(folder, files=3, lines=30_000, seed=0):
    """Zipf-ish random lines over 5000 words, so that the vocabulary's cut-off takes many."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(5000)])
    for f in range(files):
        ids = rng.zipf(1.3, (lines, 8)) % len(words)
        write_lines(folder / f"part{f}.txt", [" ".join(row) for row in words[ids]])
    return corpus.discover(folder)


def tables_and_cut(store: Store, sources, memory: str, shards: int | None = None):
    config = load_config(None, ["tokenizer=whitespace", "min_count=3", "orders=[4]"])
    shard = [stages.ingest(store, s, config.corpus) for s in sources][:shards]
    counted = [stages.counts(store, s, 4, memory) for s in shard]
    vocab = stages.vocab(store, [stages.types(store, s) for s in shard], config.vocab)
    merged = stages.tables(store, counted, memory)
    return merged, stages.cutoff(store, merged, vocab, memory), vocab


def equal_tables(a, b) -> bool:
    folders = [t.path / stages.TABLES_DIR for t in (a, b)]
    return stages.table_ids(a).table.equals(stages.table_ids(b).table) and all(
        x.equals(y) for x, y in zip(*map(read_tables, folders), strict=True)
    )


def test_tables_and_cutoff_within_a_tiny_budget_equal_a_roomy_one_and_a_recount(tmp_path):
    sources = corpus_files(tmp_path / "corpus")
    tiny, tiny_cut, vocab = tables_and_cut(Store(tmp_path / "tiny"), sources, TINY)
    roomy, roomy_cut, _ = tables_and_cut(Store(tmp_path / "roomy"), sources, ROOMY)
    assert tiny.key == roomy.key and tiny_cut.key == roomy_cut.key  # the budget is no input
    assert equal_tables(tiny, roomy) and equal_tables(tiny_cut, roomy_cut)
    # Byte for byte too: a model's key is the digest of the cut tables' files.
    assert tiny.manifest["files"] == roomy.manifest["files"]
    assert tiny_cut.manifest["files"] == roomy_cut.manifest["files"]
    _, train = assert_merged_tables_recount(Store(tmp_path / "tiny"), tiny)
    ids = stages.load_vocabulary(vocab)
    cut = read_tables(tiny_cut.path / stages.TABLES_DIR)
    assert ids.size < stages.table_ids(tiny).size  # the cut-off made types one <unk>
    for got, want in zip(cut, count_ngrams(ids.stream(train), 4, ids.size), strict=True):
        assert got.equals(want)


def test_a_shard_added_within_a_tiny_budget_extends_the_stored_merge(tmp_path):
    sources = corpus_files(tmp_path / "corpus", seed=1)
    store = Store(tmp_path / "grown")
    tables_and_cut(store, sources, TINY, shards=2)
    grown, grown_cut, _ = tables_and_cut(store, sources, TINY)
    assert "extends" in grown.manifest["note"]
    full, full_cut, _ = tables_and_cut(Store(tmp_path / "full"), sources, ROOMY)
    assert equal_tables(grown, full) and equal_tables(grown_cut, full_cut)
    assert_merged_tables_recount(store, grown)
