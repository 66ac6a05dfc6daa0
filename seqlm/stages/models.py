"""Model stages: each fits one model from the data stages' artifacts and saves it to the store.

Contract: ``unigram`` reads the vocabulary, ``ngram`` the merged count tables of orders 1..n,
``rnn`` the prepared shards and vocabulary. Each records its identity (name, family, size) under
``rows.model`` in its manifest, and the tokenizer its text was split with (scoring re-applies it).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqlm import corpus
from seqlm.config import NgramConfig, RnnConfig, UnigramConfig
from seqlm.lm import LanguageModel
from seqlm.ngram import NgramModel, fit, write_arpa
from seqlm.ngram.budget import give_back_freed
from seqlm.ngram.model import MODEL
from seqlm.report import Identity
from seqlm.stages.data import (
    TABLES_DIR,
    keep_subwords,
    load_vocabulary,
    vocab_shards,
    vocab_tokenizer,
)
from seqlm.stages.stage import Prepared, Stage, inputs, ref, resolve
from seqlm.store import Artifact, Plan, Store
from seqlm.unigram import UnigramModel
from seqlm.vocab import VOCAB_FILE, Vocabulary

if TYPE_CHECKING:
    from seqlm.rnn.score import RNNScorer
    from seqlm.rnn.training import Callbacks, TrainResult

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoint"  # a recurrent model's folder: best.pt (weights, config, vocab key)
HISTORY_FILE = "history.json"  # per-epoch train/valid perplexity, tokens/s, learning rate
CURVE_FILE = "learning_curve.png"


def plan_unigram(vocab: Artifact, config: UnigramConfig) -> Plan:
    return UNIGRAM.plan_of(asdict(config), {"vocab": ref(vocab)})


def unigram(store: Store, vocab: Artifact, config: UnigramConfig) -> Artifact:
    """The add-k unigram model of the vocabulary's training counts."""

    def produce(out: Path) -> dict[str, Any]:
        v = load_vocabulary(vocab)
        UnigramModel.fit(v, config.add_k).save(out, v)
        name = Identity("unigram", "unigram", "1-gram")
        return {
            "model": name.as_dict(),
            "parameters": v.size - 1,
            "tokenizer": vocab_tokenizer(vocab),
        } | keep_subwords(vocab_shards(vocab), out)

    return store.build(plan_unigram(vocab, config), produce)


def plan_ngram(tables: Artifact, order: int, config: NgramConfig) -> Plan:
    settings = {"order": order, "smoothing": config.smoothing, "arpa": config.arpa}
    if config.smoothing == "addk":
        settings["add_k"] = config.add_k
    if config.smoothing == "kn":
        settings["discount_fallback"] = config.discount_fallback
    # Keyed by the content of what it reads (the tables of orders 1..n and their vocabulary), not
    # by the tables' key, which also covers higher orders: other n-gram orders leave it alone.
    files = tables.manifest["files"]
    read = [VOCAB_FILE, *(f"order{n}.parquet" for n in range(1, order + 1))]
    digests = {name: files.get(f"{TABLES_DIR}/{name}", {}).get("xxh3_128") for name in read}
    return NGRAM.plan_of(settings, {"tables": digests})


def ngram(store: Store, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    """An n-gram model of one order from the merged count tables (and its ARPA file if asked)."""

    def produce(out: Path) -> dict[str, Any]:
        v = Vocabulary.load(tables.path / TABLES_DIR / VOCAB_FILE)
        model = fit(  # reads the tables in batches, in the budget, the model's arrays mapped
            tables.path / TABLES_DIR,
            v,
            config.smoothing,
            order=order,
            add_k=config.add_k,
            discount_fallback=config.discount_fallback,
            memory=config.memory,
            scratch=out,
            setting="ngram.memory",
        )
        give_back_freed()  # the batches' freed pages, before saving maps the model's files
        (vocabulary,) = inputs(tables, "vocab")
        tokenizer = vocab_tokenizer(vocabulary)
        model.info["tokenizer"] = tokenizer  # scoring a text must split it the same way
        model.save(out / MODEL)
        subwords = keep_subwords(vocab_shards(vocabulary), out / MODEL)
        if config.arpa:
            write_arpa(model, out / "model.arpa")
        name = Identity(f"{config.smoothing}{order}", "ngram", f"{order}-gram")
        # A probability per n-gram, and a back-off weight per n-gram below the top order.
        parameters = 2 * sum(model.sizes) - model.sizes[-1]
        orders = {f"order{n}": k for n, k in enumerate(model.sizes, 1)}
        record = {"model": name.as_dict(), "parameters": parameters, "tokenizer": tokenizer}
        return record | subwords | orders

    # The count tables stay in the store: the model's runs reference them by key and path.
    return store.build(plan_ngram(tables, order, config), produce, note={"tables": ref(tables)})


def model_vocabulary(model: Artifact) -> Artifact:
    """The vocabulary whose ids a model predicts."""
    if model.stage == NGRAM.name:
        (vocabulary,) = inputs(resolve(model, model.manifest["note"]["tables"]), "vocab")
        return vocabulary
    (vocabulary,) = inputs(model, "vocab")
    return vocabulary


def plan_rnn(data: Prepared, model: str, config: RnnConfig) -> Plan:
    """What one model's training depends on: every setting but the list of models, the log's
    pace, the time cap only when there is one (a model it cuts short is another model), and the
    processes only when several (their weights agree with one process's to rounding, not bit
    for bit, and each has its own dropout masks)."""
    unkeyed = ("models", "log_every_s", "max_minutes", "nproc")
    settings = {k: v for k, v in asdict(config).items() if k not in unkeyed}
    if config.max_minutes:
        settings["max_minutes"] = config.max_minutes
    if config.nproc > 1:
        settings["nproc"] = config.nproc
    inputs = {"vocab": ref(data.vocab), "shards": [ref(s) for s in data.shards]}
    return RNN.plan_of(settings | {"model": model}, inputs)


def rnn(
    store: Store,
    data: Prepared,
    model: str,
    config: RnnConfig,
    callbacks: Callbacks | None = None,
) -> Artifact:
    """A recurrent model trained on the train split, early-stopped on valid; a run cut short (a
    crash, a stop) resumes from its last epoch's checkpoint. ``callbacks`` get each epoch's
    figures as it ends and the progress within an epoch."""
    if config.max_minutes:
        # The model trained without a cap is what a capped run makes unless the cap cuts it.
        uncapped = plan_rnn(data, model, replace(config, max_minutes=0.0))
        found = store.get(uncapped.stage, uncapped.key)
        if found is not None:
            return found
    return store.build(
        plan_rnn(data, model, config),
        lambda out: _train_rnn(out, data, model, config, callbacks),
        resumable=True,
    )


def _train_rnn(
    out: Path, data: Prepared, model: str, config: RnnConfig, callbacks: Callbacks | None
) -> dict[str, Any]:
    from seqlm.rnn import plot_learning_curve, train  # torch: only where a model trains
    from seqlm.rnn.checkpoint import CheckpointError
    from seqlm.rnn.training import Callbacks

    v = load_vocabulary(data.vocab)
    folders = [s.path for s in data.shards]
    tokenizer = data.tokenizer
    checkpoints = out / CHECKPOINTS

    def trained(resume: bool) -> TrainResult:
        return train(
            v.stream(corpus.load_split(folders, "train")),
            v.stream(corpus.load_split(folders, "valid")),
            v.size,
            model,
            config,
            checkpoints,
            vocab_digest=v.digest(),
            resume=resume,
            callbacks=callbacks or Callbacks(),
            extra={"tokenizer": tokenizer},
        )

    resume = (checkpoints / "last.pt").exists()
    try:
        result = trained(resume)
    except CheckpointError as e:
        if not resume:
            raise
        # A checkpoint cut short by a crash (or garbled): start over rather than fail forever.
        log.warning("%s; removed, training from scratch", e)
        shutil.rmtree(checkpoints)
        result = trained(False)
    (checkpoints / "last.pt").unlink(missing_ok=True)  # best.pt is the model
    v.save(checkpoints / VOCAB_FILE)  # what its ids mean, beside it as `seqlm rnn train` does
    subwords = keep_subwords(data.shards, checkpoints)
    (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=1))
    plot_learning_curve(result.history, out / CURVE_FILE, title=f"{model} learning curve")
    size = f"{config.nlayers}x{config.nhid}"
    return {
        "model": Identity(model, "rnn", size).as_dict(),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "epochs": result.epochs,
        "tokens_per_second": round(result.tokens_per_second),
        "device": result.device,
        "precision": result.precision,
        "stopped": result.stopped,
        "tokenizer": tokenizer,
    } | subwords


# Evaluation reads the stream in this many columns cut at line ends, as the word-language-model
# example's batched evaluation does: the state restarts at 9 of ~thousands of line ends, for
# ~10x the throughput of one column.
EVAL_COLUMNS = 10


def tokenizer_folder(model: Artifact) -> Path:
    """Where a model's folder keeps its subword tokenizer: beside what its loader reads."""
    return model.path / {NGRAM.name: MODEL, RNN.name: CHECKPOINTS}.get(model.stage, "")


def load_rnn(folder: Path) -> RNNScorer:
    from seqlm.rnn import RNNScorer, load_model, resolve_device

    model = load_model(folder / CHECKPOINTS / "best.pt", resolve_device("auto"))[0]
    return RNNScorer(model, columns=EVAL_COLUMNS)


UNIGRAM = Stage("unigram", 2, plan_unigram, unigram, lambda a: "fit unigram")
NGRAM = Stage("ngram", 5, plan_ngram, ngram, lambda a: f"fit {a['config'].smoothing}{a['order']}")
RNN = Stage("rnn", 5, plan_rnn, rnn, lambda a: f"train {a['model']}")

# How to load each model stage's artifact for scoring.
LOADERS: dict[str, Callable[[Path], LanguageModel]] = {
    "unigram": UnigramModel.load,
    "ngram": lambda path: NgramModel.load(path / MODEL),
    "rnn": load_rnn,
}
