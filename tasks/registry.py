"""The MLflow Model Registry: the best model of a corpus, and its ``champion`` alias.

A model is logged as code (``tasks/registry_model.py``) with the ``seqlm`` package beside it and
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
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema
from prefect import task
from prefect.cache_policies import NO_CACHE

import seqlm
from seqlm.corpus import SUFFIXES
from seqlm.report import ModelResult, identity
from seqlm.stages import interpolated_parts, load_metrics
from seqlm.stages.models import model_vocabulary
from seqlm.store import Artifact
from seqlm.vocab import VOCAB_FILE
from tasks.tracking import PipelineRun

log = logging.getLogger("seqlm.registry")

CHAMPION = "champion"
LIBRARY = Path(seqlm.__file__).parent
MODEL_CODE = Path(__file__).with_name("registry_model.py")
# What loading the model imports (the registry tests check it), at the versions that logged it.
_REQUIREMENTS = [
    *(
        f"{name}=={version(name)}"
        for name in (
            "mlflow",
            "numpy",
            "polars",
            "pyarrow",
            "pandas",
            "xxhash",
            "tokenizers",
        )
    ),
    "torch==2.13.0",
]
MAX_NAME = 100
# What tasks/registry_model.py takes and gives: text, one line a row; each target's ln p.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string, "text")]),
    outputs=Schema([ColSpec(DataType.string, "target"), ColSpec(DataType.double, "logprob")]),
)


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


def champion_alias(corpus_key: str) -> str:
    """The alias of the champion of one corpus content (``champion-<corpus key>``)."""
    return f"{CHAMPION}-{corpus_key}"


@task(name="register-champion", cache_policy=NO_CACHE)
def register_champion(
    parent: PipelineRun, corpus: str, candidate: Artifact, result: ModelResult
) -> str | None:
    """One champion per corpus content key (alias ``champion-<corpus key>``); ``champion`` is
    that of the corpus content of the latest run. The champion moves to ``candidate`` only when
    there is none for this content, or when ``candidate`` has a lower test perplexity on the same
    targets (same vocabulary key); a model scored on other targets never replaces it. A model
    registered before (same model keys) is not logged again. Returns the champion's version
    when it moved, else None."""
    parts = interpolated_parts(candidate) if "parts" in candidate.manifest["rows"] else [candidate]
    tags = parent.tags
    client = parent.tracker.client
    name = registered_name(corpus)
    alias = champion_alias(tags["corpus_key"])
    champion = _standing_champion(client, name, tags, result)
    if champion is not None:
        move_alias(client, name, CHAMPION, champion.version)
        return None
    model_keys = ",".join(part.key for part in parts)
    found = client.search_model_versions(f"name = '{name}' and tags.model_keys = '{model_keys}'")
    if found:  # registered before (its alias since moved on): the folders are not copied again
        version = str(found[0].version)
    else:
        version = _log_version(parent, name, candidate, parts)
        version_tags = {**tags, "test_ppl": str(result.test_ppl), "model": result.model}
        for key, value in (version_tags | {"model_keys": model_keys}).items():
            client.set_model_version_tag(name, version, key, value)
    for moved in (alias, CHAMPION):
        move_alias(client, name, moved, version)
    log.info("%s version %s is the champion (test perplexity %.3f)", name, version, result.test_ppl)
    return version


ALIAS_TRIES = 3


def move_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``. MLflow's SQL store looks an alias up, then inserts or
    updates it: two runs moving one alias at once can both insert, and the second fails on the
    first's row (a unique constraint). Tried again, it finds that row and updates it."""
    for attempt in range(1, ALIAS_TRIES + 1):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == ALIAS_TRIES:
                raise


def _standing_champion(
    client: MlflowClient, name: str, tags: dict[str, str], result: ModelResult
) -> ModelVersion | None:
    """The corpus content's champion when ``result`` does not replace it: scored on other
    targets (another vocabulary), or no better on the test split."""
    champion = _champion(client, name, tags["corpus_key"])
    if champion is None:
        return None
    if champion.tags.get("vocab_key") != tags["vocab_key"]:
        why = f"{result.model} was scored on other targets (another vocabulary)"
    elif result.test_ppl >= (best := float(champion.tags["test_ppl"])):
        why = f"test perplexity {best:.3f} ≤ {result.test_ppl:.3f} of {result.model}"
    else:
        return None
    log.info("%s v%s stays champion (%s)", name, champion.version, why)
    return champion


def _champion(client: MlflowClient, name: str, corpus_key: str) -> ModelVersion | None:
    """The champion of one corpus content: its alias's version, or (registered before there
    was one alias per content) the ``champion`` alias's when it was scored on that content."""
    for alias in (champion_alias(corpus_key), CHAMPION):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        if version.tags.get("corpus_key") == corpus_key:
            return version
    return None


def _log_version(parent: PipelineRun, name: str, candidate: Artifact, parts: list[Artifact]) -> str:
    """A new model version, logged from a child run of the pipeline run: the model folders,
    the vocabulary their ids mean and the tokenizer they were trained with."""
    vocab_path = model_vocabulary(parts[0]).path / VOCAB_FILE
    tokenizer = candidate.manifest["rows"]["tokenizer"]
    tracker = parent.tracker
    model = identity(candidate).name
    run = parent.start_model_run(f"register {model}", "registry", {"model": model})
    artifacts = {"vocab": str(vocab_path)} | {
        f"part{i}": str(part.path) for i, part in enumerate(parts)
    }
    weight = load_metrics(candidate)["weight"] if len(parts) > 1 else None
    config = {"tokenizer": tokenizer, "stages": [part.stage for part in parts], "weight": weight}
    try:
        with mlflow.start_run(run_id=run):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts=artifacts,
                model_config=config,
                code_paths=[str(LIBRARY)],
                pip_requirements=_REQUIREMENTS,
                # Given, not inferred (MLflow warns when it cannot infer them), and shown in the UI.
                signature=SIGNATURE,
                input_example=pd.DataFrame({"text": ["a line of text", "another line"]}),
            )
        # Registered through the client: mlflow's own registration prints lines of its own.
        client = tracker.client
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        created = client.create_model_version(
            name, info.model_uri, run_id=run, model_id=info.model_id
        )
    except BaseException:
        tracker.finish(run, failed=True)
        raise
    tracker.finish(run)
    return str(created.version)
