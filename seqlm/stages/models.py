"""Model stages: each fits one model from the data stages' artifacts and saves it to the store."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from seqlm import corpus
from seqlm.config import NgramConfig, RnnConfig, UnigramConfig
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel, fit, read_tables, write_arpa
from seqlm.ngram.counts import VOCAB_FILE as TABLES_VOCAB_FILE
from seqlm.rnn.config import ModelConfig, TrainConfig
from seqlm.stages.data import TABLES, load_vocabulary
from seqlm.store import Artifact, Plan, Store
from seqlm.unigram import UnigramModel
from seqlm.vocab import Vocabulary

if TYPE_CHECKING:
    from seqlm.rnn.score import RNNScorer
    from seqlm.rnn.training import TrainResult

log = logging.getLogger(__name__)

MODEL = "model"
CHECKPOINTS = "checkpoint"  # a recurrent model's folder: best.pt (weights, config, vocab key)
HISTORY_FILE = "history.json"  # per-epoch train/valid perplexity, tokens/s, learning rate
CURVE_FILE = "learning_curve.png"


class LanguageModel(Protocol):
    def score_stream(self, stream: np.ndarray) -> np.ndarray: ...


def plan_unigram(vocab: Artifact, config: UnigramConfig) -> Plan:
    return Plan("unigram", 1, asdict(config), {"vocab": vocab.key})


def unigram(store: Store, vocab: Artifact, config: UnigramConfig) -> Artifact:
    """The add-k unigram model of the vocabulary's training counts."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        UnigramModel.fit(v, config.add_k).save(out, v)
        return {"parameters": v.size - 1}

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
    read = [TABLES_VOCAB_FILE, *(f"order{n}.parquet" for n in range(1, order + 1))]
    digests = {name: files.get(f"{TABLES}/{name}", {}).get("xxh3_128") for name in read}
    return Plan("ngram", 2, settings, {"tables": digests})


def ngram(store: Store, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    """An n-gram model of one order from the merged count tables (and its ARPA file if asked)."""

    def produce(out: Path) -> dict[str, int]:
        counted = read_tables(tables.path / TABLES)
        if order > len(counted):
            raise SeqlmError(f"{tables.path}: counted up to order {len(counted)}, not {order}")
        v = Vocabulary.load(tables.path / TABLES / TABLES_VOCAB_FILE)
        model = fit(
            counted[:order],
            v,
            config.smoothing,
            add_k=config.add_k,
            discount_fallback=config.discount_fallback,
        )
        tokenizer = shards_tokenizer(tables_shards(tables))
        model.info["tokenizer"] = tokenizer  # scoring a text must split it the same way
        model.save(out / MODEL)
        if config.arpa:
            write_arpa(model, out / "model.arpa")
        # A probability per n-gram, and a back-off weight per n-gram below the top order.
        parameters = 2 * sum(model.sizes) - model.sizes[-1]
        orders = {f"order{n}": k for n, k in enumerate(model.sizes, 1)}
        return {"parameters": parameters, "tokenizer": tokenizer} | orders

    return store.build(plan_ngram(tables, order, config), produce)


def shards_tokenizer(shards: Sequence[Artifact]) -> str:
    """How the shards' text was split into tokens: each model records it, for scoring."""
    (tokenizer,) = {s.manifest["config"]["tokenizer"] for s in shards}
    return tokenizer


def tables_shards(tables: Artifact) -> list[Artifact]:
    """The ingested shards whose counts the merged tables sum."""
    store = Store(tables.path.parents[1])  # <store>/tables/<key>

    def found(stage: str, key: str) -> Artifact:
        return Artifact(stage, key, store.path(stage, key))

    counts = [found("counts", key) for key in tables.manifest["inputs"]["counts"]]
    return [found("ingest", c.manifest["inputs"]["shard"]) for c in counts]


def plan_rnn(vocab: Artifact, shards: Sequence[Artifact], model: str, config: RnnConfig) -> Plan:
    """What one model's training depends on: every setting but the list of models, and the time
    cap only when there is one (a model it cuts short is another model)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("models", "max_minutes")}
    if config.max_minutes:
        settings["max_minutes"] = config.max_minutes
    return Plan(
        "rnn",
        2,
        settings | {"model": model},
        {"vocab": vocab.key, "shards": [s.key for s in shards]},
    )


def rnn(
    store: Store,
    vocab: Artifact,
    shards: Sequence[Artifact],
    model: str,
    config: RnnConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> Artifact:
    """A recurrent model trained on the shards' train split, early-stopped on valid; a run cut
    short (a crash, a stop) resumes from its last epoch's checkpoint. ``on_progress`` gets
    training's progress within an epoch (a terminal's progress bar)."""

    def produce(out: Path) -> dict[str, Any]:
        from seqlm.rnn import plot_learning_curve, train  # torch: only where a model trains
        from seqlm.rnn.checkpoint import CheckpointError

        v = load_vocabulary(vocab)
        folders = [s.path for s in shards]
        tokenizer = shards_tokenizer(shards)
        checkpoints = out / CHECKPOINTS

        def trained(resume: bool) -> TrainResult:
            return train(
                v.stream(corpus.load_split(folders, "train")),
                v.stream(corpus.load_split(folders, "valid")),
                v.size,
                train_config(model, config),
                checkpoints,
                vocab_key=vocab.key,
                resume=resume,
                on_epoch=on_epoch,
                on_progress=on_progress,
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
        (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=1))
        plot_learning_curve(result.history, out / CURVE_FILE, title=f"{model} learning curve")
        return {
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "epochs": result.epochs,
            "tokens_per_second": round(result.tokens_per_second),
            "device": result.device,
            "precision": result.precision,
            "stopped": result.stopped,
            "tokenizer": tokenizer,
        }

    if config.max_minutes:
        # The model trained without a cap is what a capped run makes unless the cap cuts it.
        uncapped = plan_rnn(vocab, shards, model, replace(config, max_minutes=0.0))
        found = store.get(uncapped.stage, uncapped.key)
        if found is not None:
            return found
    return store.build(plan_rnn(vocab, shards, model, config), produce, resumable=True)


def train_config(model: str, config: RnnConfig) -> TrainConfig:
    shape = ModelConfig(
        model, config.emsize, config.nhid, config.nlayers, config.dropout, config.tied
    )
    return TrainConfig(
        model=shape,
        bptt=config.bptt,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        lr=config.lr,
        clip=config.clip,
        schedule="plateau",
        epochs=config.epochs,
        max_minutes=config.max_minutes,
        device=config.device,
        precision=config.precision,
        seed=config.seed,
    )


# Evaluation reads the stream in this many columns cut at line ends, as the word-language-model
# example's batched evaluation does: the state restarts at 9 of ~thousands of line ends, for
# ~10x the throughput of one column.
EVAL_COLUMNS = 10


def load_rnn(folder: Path) -> RNNScorer:
    from seqlm.rnn import RNNScorer, load_model, resolve_device

    model = load_model(folder / CHECKPOINTS / "best.pt", resolve_device("auto"))[0]
    return RNNScorer(model, columns=EVAL_COLUMNS)


# How to load each model stage's artifact for scoring.
LOADERS: dict[str, Callable[[Path], LanguageModel]] = {
    "unigram": UnigramModel.load,
    "ngram": lambda path: NgramModel.load(path / MODEL),
    "rnn": load_rnn,
}
