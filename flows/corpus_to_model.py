"""The ``corpus-to-model`` flow: ingest → vocabulary → models → evaluation → comparison.

Every stage is a task over the artifact store, so a re-run on an unchanged corpus only re-reads
what exists. MLflow gets one parent run per pipeline run and one child run per model.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped

from seqlm.config import PipelineConfig
from seqlm.corpus import DEFAULT_CORPUS, discover
from seqlm.store import Artifact, stage_key
from tasks.report import publish_comparison, track_model
from tasks.stages import (
    build_vocabulary,
    count_shard,
    evaluate_model,
    fit_ngram,
    fit_unigram,
    ingest_source,
    merge_counts,
)
from tasks.tracking import Tracker


@flow(name="corpus-to-model")
def corpus_to_model(
    corpus: str = DEFAULT_CORPUS, config: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Train every model of the ladder on ``corpus`` and compare their perplexities.

    ``config`` holds the sections of a seqlm TOML config (``{"vocab": {"min_count": 1}}``);
    anything left out keeps its default.
    """
    logger = get_run_logger()
    cfg = PipelineConfig.from_dict(config or {})
    sources = discover(corpus)
    store = Path(cfg.run.store)
    experiment = cfg.run.experiment
    tracker = Tracker(experiment)  # fails here, before any work, if MLflow cannot be written

    shards: list[Artifact] = ingest_source.map(store, sources, unmapped(cfg.corpus)).result()
    train_shards = [s for s in shards if "train" in s.manifest["rows"]]
    max_order = max(cfg.ngram.orders, default=1)
    counts: list[Artifact] = count_shard.map(store, train_shards, unmapped(max_order)).result()
    vocab = build_vocabulary(store, counts, cfg.vocab)
    keys = {"corpus_key": stage_key("corpus", 1, {}, {"shards": [s.key for s in shards]})}
    keys["vocab_key"] = vocab.key
    parent = tracker.start_run(
        f"{Path(corpus).name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        {
            "corpus": corpus,
            "shard_keys": ",".join(s.key for s in shards),
            **keys,
            "vocab_size": vocab.manifest["rows"]["types"],
            **cfg.flat(),
        },
        tags=keys,
    )
    try:
        unigram = fit_unigram(store, vocab, cfg.unigram)
        models = {"unigram": ("unigram", unigram, asdict(cfg.unigram))}
        if cfg.ngram.orders:
            tables = merge_counts(store, counts, vocab)
            ngram_params = asdict(cfg.ngram) | {"tables_key": tables.key}
            for order in cfg.ngram.orders:
                model = fit_ngram(store, tables, order, cfg.ngram)
                name = f"{cfg.ngram.smoothing}{order}"
                models[name] = ("ngram", model, ngram_params | {"order": order})
        results = []
        for name, (family, model, params) in models.items():
            evaluation = evaluate_model(store, model, vocab, shards)
            results.append(
                track_model(
                    experiment,
                    parent,
                    name,
                    family,
                    model,
                    evaluation,
                    params,
                    keys,
                )
            )
        rows = publish_comparison(experiment, parent, results)
    except BaseException:
        tracker.finish(parent, failed=True)
        raise
    tracker.finish(parent)
    logger.info("compared %d models; MLflow run %s", len(rows), parent)
    return rows
