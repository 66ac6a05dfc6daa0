from __future__ import annotations

from seqlm import stages
from seqlm.config import load_config
from seqlm.corpus import discover
from seqlm.store import Store


def run_unigram(store: Store, corpus, overrides):
    config = load_config(None, overrides)
    shards = [stages.ingest(store, s, config.corpus) for s in discover(corpus)]
    vocab = stages.vocabulary(store, shards, config.vocab)
    model = stages.unigram(store, vocab, config.unigram)
    return stages.load_metrics(stages.evaluation(store, model, vocab, shards))


def test_ptb_targets_follow_the_convention(ptb, tmp_path):
    metrics = run_unigram(Store(tmp_path), ptb, ["tokenizer=whitespace", "min_count=1"])
    # Each token of each line plus one </s> per line; <unk> is PTB's own literal word.
    assert metrics["test"]["targets"] == 78669 + 3761
    assert metrics["test"]["oov"] == 4794
    assert metrics["valid"]["targets"] == 73760
    assert metrics["num_parameters"] == 10000  # 9,999 PTB types + </s>
    assert 1 < metrics["test"]["ppl"] < metrics["test"]["ppl_no_unk"]


def test_stages_are_reused_by_key(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"w{i % 7} w{i % 5} w{i % 3}\n" for i in range(100)))
    store = Store(tmp_path / "store")
    first = run_unigram(store, corpus, [])
    built = sorted(p.relative_to(store.root) for p in store.root.glob("*/*"))
    assert run_unigram(store, corpus, []) == first
    assert sorted(p.relative_to(store.root) for p in store.root.glob("*/*")) == built
    # A config change reaches exactly the stages downstream of it.
    run_unigram(store, corpus, ["add_k=0.5"])
    assert len(list(store.root.glob("ingest/*"))) == 1
    assert len(list(store.root.glob("vocab/*"))) == 1
    assert len(list(store.root.glob("unigram/*"))) == 2
    assert len(list(store.root.glob("evaluate/*"))) == 2
