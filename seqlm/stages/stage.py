"""What a stage is, and the records the stages pass on.

A stage is one record: its name (its folder in the store, its Prefect task's name and its
function's name in ``seqlm.stages``), its version, its plan (what its key is made of, known
before any work) and its build (the artifact: found by key, or made and saved).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seqlm.ngram.budget import give_back_freed, whole_tree
from seqlm.store import Artifact, Plan, Store

log = logging.getLogger("seqlm.stages")


@dataclass(frozen=True)
class Stage:
    name: str
    # Bump when the same config and inputs would now give another output (a new file format, a
    # fixed bug): the keys change, so every store builds the stage anew.
    version: int
    plan: Callable[..., Plan]
    build: Callable[..., Artifact]  # (store, *inputs) -> the artifact
    label: Callable[[Mapping[str, Any]], str]  # a run in a few words, from build's arguments

    def plan_of(self, config: Mapping[str, Any], inputs: Mapping[str, Any]) -> Plan:
        return Plan(self.name, self.version, config, inputs)

    def arguments(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Build's arguments by parameter name, as Prefect hands them to a task run's name."""
        return inspect.signature(self.build).bind(*args, **kwargs).arguments

    def run(self, store: Store, *args: Any, **kwargs: Any) -> Artifact:
        """The artifact, after one line that says how the stage went (``fit kn5  found``). A
        stage's ``ngram.memory`` bounds the process tree: it spends what the tree leaves of it."""
        with whole_tree():
            artifact = self.build(store, *args, **kwargs)
        give_back_freed()  # each stage spends its budget from what the process holds at rest
        report(self.label(self.arguments(store, *args, **kwargs)), artifact)
        return artifact


def report(label: str, artifact: Artifact) -> None:
    done = "found" if artifact.seconds is None else f"built {artifact.seconds:8.2f} s"
    log.info("%-28s %s", label, done)


def ref(artifact: Artifact) -> str:
    """How a plan names an input artifact, whatever its stage: ``<stage>/<key>``."""
    return f"{artifact.stage}/{artifact.key}"


def resolve(artifact: Artifact, reference: str) -> Artifact:
    """The artifact a reference in ``artifact``'s manifest names, in the same store."""
    stage, key = reference.split("/")
    return Artifact(stage, key, artifact.path.parents[1] / stage / key)  # <store>/<stage>/<key>


def inputs(artifact: Artifact, name: str) -> list[Artifact]:
    """The input artifacts ``artifact``'s plan named ``name`` (one reference or a list)."""
    value = artifact.manifest["inputs"][name]
    return [resolve(artifact, r) for r in (value if isinstance(value, list) else [value])]


def shards_tokenizer(shards: Sequence[Artifact]) -> str:
    """How the shards' text was split into tokens (one tokenizer for them all)."""
    (tokenizer,) = {s.manifest["config"]["tokenizer"] for s in shards}
    return tokenizer


@dataclass(frozen=True)
class Prepared:
    """The prepared corpus every model reads: the shards (each split of each file), the
    vocabulary of the train split, and the merged count tables over its ids (None without n-gram
    models)."""

    shards: tuple[Artifact, ...]
    vocab: Artifact
    tables: Artifact | None = None

    @property
    def tokenizer(self) -> str:
        return shards_tokenizer(self.shards)

    @property
    def train_shards(self) -> list[Artifact]:
        return [s for s in self.shards if "train" in s.manifest["rows"]]

    def characters(self, split: str) -> int:
        """The split's characters as read (residues for sequences; line ends not counted) plus
        one per line end: what bits per character divide by, the same for every tokenization."""
        rows = [s.manifest["rows"] for s in self.shards if split in s.manifest["rows"]]
        return sum(r[f"{split}_chars"] + r[split] for r in rows)


@dataclass(frozen=True)
class Scored:
    """A model and its evaluations: on valid and test, and for a recurrent model also with its
    state restarted at every line (``line_reset``). An interpolation is its own evaluation."""

    model: Artifact
    evaluation: Artifact
    line_reset: Artifact | None = None
