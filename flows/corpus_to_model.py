"""The ``corpus-to-model`` flow: ingest → vocabulary → models → evaluation → comparison.

Every stage is a task over the artifact store, so a re-run on an unchanged corpus only re-reads
what exists. MLflow gets one parent run per pipeline run and one child run per model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped

from seqlm.config import PipelineConfig
from seqlm.corpus import DEFAULT_CORPUS, discover
from seqlm.store import Artifact, stage_key
from tasks.report import publish_comparison, track_model
from tasks.stages import build_vocabulary, evaluate_model, fit_unigram, ingest_source
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
    vocab = build_vocabulary(store, shards, cfg.vocab)
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
        models = {
            "unigram": (
                "unigram",
                fit_unigram(store, vocab, cfg.unigram),
                {"add_k": cfg.unigram.add_k},
            )
        }
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
