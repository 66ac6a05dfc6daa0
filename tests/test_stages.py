from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from seqlm import pipeline, stages
from seqlm.config import load_config
from seqlm.errors import SeqlmError
from seqlm.ngram import count_ngrams, read_tables
from seqlm.pipeline import Local
from seqlm.report import identity
from seqlm.store import Store
from seqlm.vocab import build_vocabulary
from tests.helpers import assert_merged_tables_recount, prepare, write_lines


def run(store: Store, path, overrides, orders=(2,)):
    """The unigram and KN models of ``orders`` through the pipeline's phases: each model's
    metrics by name, and the merged count tables."""
    config = load_config(None, [*overrides, f"orders={list(orders)}", "rnn.models=[]"])
    runner = Local(store)
    data = prepare(store, path, config)
    scored = pipeline.evaluate(runner, data, pipeline.fit(runner, data, config))
    metrics = {identity(s.model).name: stages.load_metrics(s.evaluation) for s in scored}
    return metrics, data.tables


def test_ptb_matches_the_convention_and_kenlm(ptb, tmp_path):
    metrics, tables = run(Store(tmp_path), ptb, ["tokenizer=whitespace", "min_count=1"], (3,))
    for name in ("unigram", "kn3"):
        # Each token of each line plus one </s> per line; <unk> is PTB's own literal word.
        assert metrics[name]["test"]["targets"] == 78669 + 3761
        assert metrics[name]["test"]["oov"] == 4794
        assert metrics[name]["valid"]["targets"] == 73760
    assert metrics["unigram"]["num_parameters"] == 10000  # 9,999 PTB types + </s>
    # Through the store's per-shard tables, the same figure as KenLM's lmplz -o 3.
    assert metrics["kn3"]["test"]["ppl"] == pytest.approx(148.281, rel=5e-4)
    assert [t.height for t in read_tables(tables.path / stages.TABLES_DIR)][1:] == [264990, 586558]


def lines(n: int, offset: int = 0) -> list[str]:
    return [f"w{(i * 7) % 11} w{(i * 3) % 5} w{i % 13} w{(i + offset) % 4}" for i in range(n)]


def test_stages_are_reused_by_key(tmp_path):
    corpus_file = write_lines(tmp_path / "c.txt", lines(200))
    store = Store(tmp_path / "store")
    first, _ = run(store, corpus_file, ["discount_fallback=true"])
    built = sorted(store.root.glob("*/*"))
    assert run(store, corpus_file, ["discount_fallback=true"])[0] == first
    assert sorted(store.root.glob("*/*")) == built
    # A config change reaches exactly the stages downstream of it.
    run(store, corpus_file, ["discount_fallback=true", "unigram.add_k=0.5"])
    assert {stage: len(list(store.root.glob(f"{stage}/*"))) for stage in stages.STAGES} == {
        "ingest": 1,
        "subwords": 0,
        "encode": 0,
        "types": 1,
        "counts": 1,
        "vocab": 1,
        "tables": 1,
        "cutoff": 1,
        "partition": 0,
        "parts_merged": 0,
        "unigram": 2,
        "ngram": 1,
        "ngram_parts": 0,
        "rnn": 0,
        "evaluate": 3,
        "interpolate": 0,
        "compare": 0,
    }


def test_a_new_shard_is_counted_alone_and_merges_to_a_full_recount(tmp_path):
    folder = tmp_path / "corpus"
    write_lines(folder / "a.txt", lines(300))
    write_lines(folder / "b.txt", lines(200, offset=1))
    store = Store(tmp_path / "store")
    overrides = ["discount_fallback=true", "min_count=2"]
    run(store, folder, overrides, (3,))
    counted = set(store.root.glob("counts/*"))
    write_lines(folder / "c.txt", [*lines(50, offset=2), "a brand new line"])
    grown, tables = run(store, folder, overrides, (3,))
    assert len(set(store.root.glob("counts/*")) - counted) == 1

    # A full recount: all train text at once, over the shards' type dictionary, and the tables
    # the models read: over the vocabulary of all train text.
    assert len(list(store.root.glob("vocab/*"))) == 2
    (merged,) = stages.inputs(tables, "tables")
    _, train = assert_merged_tables_recount(store, merged)
    vocab = stages.table_ids(tables)
    assert vocab.table.equals(build_vocabulary(train, min_count=2).table)
    cut = read_tables(tables.path / stages.TABLES_DIR)
    for got, want in zip(cut, count_ngrams(vocab.stream(train), 3, vocab.size), strict=True):
        assert got.equals(want)
    assert grown["kn3"]["test"]["targets"] > 0


def test_interpolation_and_comparison(tmp_path):
    corpus_file = write_lines(tmp_path / "c.txt", lines(300))
    store = Store(tmp_path / "store")
    config = load_config(None, ["discount_fallback=true", "orders=[2]"])
    data = prepare(store, corpus_file, config)
    models = [stages.unigram(store, data.vocab, config.unigram)]
    models.append(stages.ngram(store, data.tables, 2, config.ngram))
    unigram, kn2 = (stages.Scored(m, stages.evaluate(store, m, data)) for m in models)
    mixed = stages.interpolate(store, kn2.evaluation, unigram.evaluation)
    metrics = stages.load_metrics(mixed)
    parts = [stages.load_metrics(s.evaluation) for s in (unigram, kn2)]
    assert 0 <= metrics["weight"] <= 1
    # λ maximises the valid likelihood, and λ = 0 or 1 would give back either part.
    assert metrics["valid"]["ppl"] <= min(p["valid"]["ppl"] for p in parts) + 1e-9
    assert metrics["num_parameters"] == sum(p["num_parameters"] for p in parts)
    assert identity(mixed).name == "kn2+unigram"
    assert stages.interpolated_parts(mixed) == models[::-1]

    compared = stages.compare(store, [unigram, kn2, stages.Scored(mixed, mixed)])
    tokens = pl.read_parquet(compared.path / stages.TOKENS_FILE)
    assert tokens.columns == ["position", "target", "is_unk", "unigram", "kn2", "kn2+unigram"]
    assert tokens.height == metrics["test"]["targets"]
    assert tokens["kn2"].sum() == pytest.approx(parts[1]["test"]["logprob"])
    assert (compared.path / stages.CHART_FILE).stat().st_size > 0
    # The comparison table the command line prints, from the store alone.
    table = stages.load_comparison(compared)
    assert table["model"].to_list() == ["unigram", "kn2", "kn2+unigram"]
    assert table["test_ppl"].to_list() == pytest.approx(
        [p["test"]["ppl"] for p in parts] + [metrics["test"]["ppl"]]
    )

    # A model scored with another vocabulary (other <unk> positions) is refused.
    shard_types = [stages.types(store, s) for s in data.train_shards]
    other_vocab = stages.vocab(store, shard_types, load_config(None, ["max_size=6"]).vocab)
    other = stages.unigram(store, other_vocab, config.unigram)
    other_data = stages.Prepared(data.shards, other_vocab)
    scored_other = stages.Scored(other, stages.evaluate(store, other, other_data))
    with pytest.raises(SeqlmError, match="different vocabularies cannot be compared"):
        stages.compare(store, [kn2, scored_other])
    with pytest.raises(SeqlmError, match="two models of one name"):
        stages.compare(store, [unigram, unigram])
    assert not list(store.root.glob("compare/.tmp-*"))


def test_count_tables_are_listed_and_plain_parquet(tmp_path, capsys):
    import duckdb
    import pyarrow.parquet as pq

    from flows.cli import main

    corpus_file = write_lines(tmp_path / "c.txt", lines(200))
    store = Store(tmp_path / "store")
    run(store, corpus_file, ["discount_fallback=true"], (2,))
    listing = stages.list_count_tables(store)
    assert listing.select("kind", "order").rows() == [
        ("shard", 1),
        ("shard", 2),
        ("merged", 1),
        ("merged", 2),
        ("cut", 1),
        ("cut", 2),
    ]
    assert set(listing["corpus"]) == {str(corpus_file)}
    for row in listing.iter_rows(named=True):
        columns = [f"w{i}" for i in range(1, row["order"] + 1)] + ["count"]
        assert pq.read_table(row["path"]).num_rows == row["rows"]
        assert pl.read_parquet(row["path"]).columns == columns
        assert duckdb.sql(f"select count(*) from '{row['path']}'").fetchall() == [(row["rows"],)]
    assert main(["ngram", "tables", "--store", str(store.root), "--json"]) == 0
    assert [r["path"] for r in json.loads(capsys.readouterr().out)] == listing["path"].to_list()


TINY_RNN = ["emsize=8", "nhid=8", "bptt=5", "batch_size=4", "rnn.epochs=1", "rnn.device=cpu"]


def stage_keys(store: Store, path, overrides) -> dict[str, str]:
    """Every stage of the pipeline through the library, by name: its artifact's key."""
    config = load_config(None, overrides)
    runner = Local(store)
    data = prepare(store, path, config)
    scored = pipeline.evaluate(runner, data, pipeline.fit(runner, data, config))
    (merged,) = stages.inputs(data.tables, "tables")
    keys = {
        "ingest": ",".join(s.key for s in data.shards),
        "types": ",".join(data.vocab.manifest["inputs"]["types"]),
        "counts": ",".join(merged.manifest["inputs"]["counts"]),
        "vocab": data.vocab.key,
        "tables": merged.key,
        "cutoff": data.tables.key,
    }
    for s in scored:
        name = identity(s.model).name
        keys[name] = s.model.key
        keys[f"evaluate {name}"] = s.evaluation.key
        if s.line_reset is not None:
            keys[f"evaluate {name} (line reset)"] = s.line_reset.key
    return keys


COUNTED = {"ingest", "types", "counts", "tables"}  # what the vocabulary's settings leave alone
ORDERS = {"counts", "tables", "cutoff"}  # what counts other n-gram orders
EVERYTHING = COUNTED | ORDERS | {"vocab", "evaluate rnn_tanh (line reset)"}
EVERYTHING |= {f"{e}{m}" for m in ("unigram", "kn2", "rnn_tanh") for e in ("", "evaluate ")}
RNN_TANH = {"rnn_tanh", "evaluate rnn_tanh", "evaluate rnn_tanh (line reset)"}


BASE = ["orders=[2]", "discount_fallback=true", "rnn.models=['rnn_tanh']", *TINY_RNN]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> tuple[Path, Store, dict[str, str]]:
    """A corpus, a store holding every stage of the base config, and their keys: each case
    copies the store and changes one setting."""
    folder = tmp_path_factory.mktemp("base")
    corpus_file = write_lines(folder / "c.txt", lines(200))
    store = Store(folder / "store")
    return corpus_file, store, stage_keys(store, corpus_file, BASE)


@pytest.mark.parametrize(
    ("change", "rebuilt"),
    [
        ("corpus.valid_fraction=0.1", EVERYTHING),
        ("vocab.max_size=8", EVERYTHING - COUNTED),
        # The same vocabulary under another cut-off: what is estimated from it stays.
        ("vocab.min_count=1", EVERYTHING - COUNTED - {"kn2"}),
        ("unigram.add_k=0.5", {"unigram", "evaluate unigram"}),
        # Other orders are other counts and models; the vocabulary, the recurrent models and a
        # model of an order counted before stay.
        ("ngram.orders=[3]", ORDERS | {"kn2", "evaluate kn2", "kn3", "evaluate kn3"}),
        ("ngram.orders=[2, 3]", ORDERS | {"kn3", "evaluate kn3"}),
        # Another smoothing is another model, named by it.
        ("ngram.smoothing='addk'", {"kn2", "evaluate kn2", "addk2", "evaluate addk2"}),
        ("rnn.lr=0.01", RNN_TANH),
        ("rnn.models=['rnn_tanh', 'gru']", {"gru", "evaluate gru", "evaluate gru (line reset)"}),
        # A cap finds the model trained without one: it would make it unless the cap cut it.
        ("rnn.max_minutes=5", set()),
        ("run.experiment='other'", set()),
    ],
)
def test_a_config_section_rebuilds_only_what_depends_on_it(base_store, tmp_path, change, rebuilt):
    corpus_file, built, before = base_store
    store = Store(tmp_path / "store")
    shutil.copytree(built.root, store.root)
    folders = set(store.root.glob("*/*"))
    after = stage_keys(store, corpus_file, [*BASE, change])
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed == rebuilt
    # What kept its key was found, not built again: the store gained only the rebuilt stages.
    new = {f"{p.parent.name}/{p.name}" for p in set(store.root.glob("*/*")) - folders}
    assert len(new) == len(rebuilt - {n for n in rebuilt if n not in after})


def test_the_same_keys_in_another_store(base_store, tmp_path):
    corpus_file, _, first = base_store
    other = [*BASE, f"run.store='{tmp_path}'"]
    assert stage_keys(Store(tmp_path / "b"), corpus_file, other) == first


def test_a_model_the_time_cap_cut_is_marked_in_the_table(tmp_path):
    from seqlm.report import comparison_frame

    corpus_file = write_lines(tmp_path / "c.txt", lines(200))
    store = Store(tmp_path / "store")
    rows = []
    for cap in ("1e-9", "0"):  # capped first: a capped run finds a model trained without one
        config = load_config(None, [*TINY_RNN, "rnn.epochs=2", f"rnn.max_minutes={cap}"])
        data = prepare(store, corpus_file, config)
        model = stages.rnn(store, data, "gru", config.rnn)
        rows.append(stages.model_result(stages.Scored(model, stages.evaluate(store, model, data))))
    table = comparison_frame(rows)
    assert table.select("epochs", "stopped").rows() == [(1, "time"), (2, "epochs")]
