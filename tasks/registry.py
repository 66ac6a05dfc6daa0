"""The MLflow Model Registry: the best model of a corpus, and its ``champion`` alias.

A model is logged as code (``seqlm/registry_model.py``) with the ``seqlm`` package beside it and
the model folders as artifacts: loading it from the registry unpickles nothing and needs neither
Prefect nor this package.
"""

from __future__ import annotations

import hashlib
import logging
import re
from importlib.metadata import version
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

import seqlm
from seqlm.corpus import SUFFIXES
from seqlm.report import Fitted, ModelResult
from tasks.tracking import Tracker

log = logging.getLogger("seqlm.registry")

CHAMPION = "champion"
LIBRARY = Path(seqlm.__file__).parent
MODEL_CODE = LIBRARY / "registry_model.py"
# What loading the model imports (the registry tests check it), at the versions that logged it.
_REQUIREMENTS = [
    *(
        f"{name}=={version(name)}"
        for name in ("mlflow", "numpy", "polars", "pyarrow", "pandas", "xxhash")
    ),
    "torch==2.13.0",
]
MAX_NAME = 100


def registered_name(corpus: str) -> str:
    """One registered model per corpus: ``seqlm-<folder>`` for a directory,
    ``seqlm-<folder>-<file stem>`` for a file (``seqlm-tinyshakespeare-input``), so that two
    corpora in one folder get two names. Characters MLflow refuses (``/``, ``:``) and any other
    outside ``[A-Za-z0-9._-]`` become ``-``; a name over ``MAX_NAME`` characters is cut and
    ends with a hash of the corpus's full path."""
    path = Path(corpus).resolve()
    if path.is_dir():
        label = path.name
    else:
        suffix = next((s for s in SUFFIXES if path.name.lower().endswith(s)), "")
        label = f"{path.parent.name}-{path.name[: len(path.name) - len(suffix)]}"
    label = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9._-]", "-", label)).strip("-")
    name = f"seqlm-{label}" if label else "seqlm"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        name = f"{name[: MAX_NAME - len(digest) - 1]}-{digest}"
    return name


@task(name="register-champion", cache_policy=NO_CACHE)
def register_champion(
    experiment: str,
    parent_run: str,
    corpus: str,
    tokenizer: str,
    vocab_path: Path,
    candidate: Fitted,
    parts: list[Fitted],
    result: ModelResult,
    tags: dict[str, str],
) -> str | None:
    """Register ``candidate`` and move the alias to it when it beats the champion on the same
    test targets (same corpus and vocabulary keys), or when there is none for those targets.
    Returns the new version, or None when the champion stays."""
    tracker = Tracker(experiment)
    name = registered_name(corpus)
    client = tracker.client
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and all(champion.tags.get(k) == v for k, v in tags.items()):
        best = float(champion.tags["test_ppl"])
        if result.test_ppl >= best:
            log.info(
                "%s v%s stays champion (%.3f ≤ %.3f)", name, champion.version, best, result.test_ppl
            )
            return None
    elif champion is not None:
        log.info("the champion of %s was scored on other test targets: replaced", name)
    run = tracker.start_run(
        f"register {candidate.name}",
        {"model": candidate.name},
        tags={"family": "registry", **tags},
        parent=parent_run,
    )
    artifacts = {"vocab": str(vocab_path)} | {
        f"part{i}": str(part.model.path) for i, part in enumerate(parts)
    }
    config = {
        "tokenizer": tokenizer,
        "stages": [part.model.stage for part in parts],
        "weight": candidate.params.get("weight"),
    }
    with mlflow.start_run(run_id=run):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            model_config=config,
            code_paths=[str(LIBRARY)],
            pip_requirements=_REQUIREMENTS,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    for key, value in {**tags, "test_ppl": str(result.test_ppl), "model": candidate.name}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    tracker.finish(run)
    log.info("%s version %s is the champion (test perplexity %.3f)", name, version, result.test_ppl)
    return version
