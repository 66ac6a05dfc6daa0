"""The pipeline as its stage sequence: prepare → fit → evaluate → mix → compare.

Each phase calls its stages through a runner. ``Local`` builds them one after another in this
process (``seqlm.run``, a notebook); the Prefect flow hands over a runner that runs each stage as
a task (``tasks.stages``), so that both run this same sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import polars as pl

from seqlm.config import NgramConfig, PipelineConfig, load_config
from seqlm.corpus import Source, discover, require_symbols
from seqlm.errors import SeqlmError
from seqlm.evaluate import Perplexity, perplexity
from seqlm.lm import LanguageModel
from seqlm.ngram.partitioned import local_map
from seqlm.progress import ProgressBar
from seqlm.samples import sample_lines
from seqlm.scoring import Splitter, splitter
from seqlm.stages import (
    COMPARE,
    COUNTS,
    CUTOFF,
    EVALUATE,
    INGEST,
    INTERPOLATE,
    LOADERS,
    NGRAM,
    NGRAM_PARTS,
    PARTITION,
    PARTS_MERGED,
    RNN,
    TABLES,
    TYPES,
    UNIGRAM,
    VOCAB,
    Prepared,
    Scored,
    Stage,
    load_comparison,
    load_metrics,
    load_vocabulary,
)
from seqlm.stages.data import ENCODE, SUBWORDS, vocab_tokenizer
from seqlm.stages.models import model_vocabulary, tokenizer_folder
from seqlm.store import Artifact, Store
from seqlm.subwords import BPE
from seqlm.vocab import Vocabulary

if TYPE_CHECKING:
    from seqlm.rnn.training import Callbacks

T = TypeVar("T")


class Runner(Protocol):
    # Hash parts of the n-gram stages on a cluster (merging, Kneser-Ney estimation), each part a
    # call of ``mapper``; 0: each of those stages is one task.
    parts: int

    def __call__(self, stage: Stage, *args: Any) -> Artifact:
        """The stage's artifact for these inputs: found in the store or built."""
        ...

    def map(self, stage: Stage, items: Sequence[Any], *args: Any) -> list[Artifact]:
        """The stage over each item (its first input), with the same other inputs."""
        ...

    def mapper(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
        """``fn(*args)`` for each call, anywhere (a worker of the cluster): the results in
        order."""
        ...


@dataclass(frozen=True)
class Local:
    """Every stage in this process, one after another (``parts``: the n-gram stages in that many
    parts, as on a cluster)."""

    store: Store
    parts: int = 0

    def __call__(self, stage: Stage, *args: Any) -> Artifact:
        return stage.run(self.store, *args)

    def map(self, stage: Stage, items: Sequence[Any], *args: Any) -> list[Artifact]:
        return [self(stage, item, *args) for item in items]

    def mapper(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
        return local_map(fn, calls)


def corpus_sources(corpus: str | Path, config: PipelineConfig) -> list[Source]:
    """The corpus's files, each checked readable by every tokenizer of the config before any
    work (a FASTA file has no words for ``punct`` to split)."""
    sources = discover(corpus)
    for source in sources:
        for tokenizer in config.corpus.tokenizers:
            require_symbols(source.path, tokenizer)
    return sources


def prepare(runner: Runner, sources: Sequence[Source], config: PipelineConfig) -> Prepared:
    """Each file ingested into shards; from their train splits, the vocabulary and (for n-gram
    models) the count tables over its ids. ``config`` names one tokenizer (``tokenizations()``)."""
    shards = runner.map(INGEST, sources, config.corpus)
    train = [s for s in shards if "train" in s.manifest["rows"]]
    if config.corpus.tokenizer == BPE:  # subwords learnt from the train text, then every shard
        shards = runner.map(ENCODE, shards, runner(SUBWORDS, train, config.corpus))
        train = [s for s in shards if "train" in s.manifest["rows"]]
    # The vocabulary needs only the shards' types: n-gram orders never re-key it.
    vocabulary = runner(VOCAB, runner.map(TYPES, train), config.vocab)
    cut = None
    if config.ngram.orders:
        counted = runner.map(COUNTS, train, max(config.ngram.orders), config.ngram.memory)
        if runner.parts and config.ngram.smoothing == "kn":
            # On a cluster: each shard's counts over the vocabulary's ids in hash parts, each
            # part summed by one call (Kneser-Ney is estimated in the same parts).
            split = runner.map(PARTITION, counted, vocabulary, runner.parts)
            cut = runner(PARTS_MERGED, split, vocabulary, runner.mapper)
        else:
            # Merged over the shards' own types; the vocabulary's cut-offs come last.
            memory = config.ngram.memory  # not keyed: where the work happens, as for counts
            cut = runner(CUTOFF, runner(TABLES, counted, memory), vocabulary, memory)
    return Prepared(tuple(shards), vocabulary, cut)


def progress_bar(model: str) -> Callbacks:
    """A terminal's progress bar for a model's training (none off a terminal)."""
    from seqlm.rnn.training import Callbacks

    bar = ProgressBar(model)
    return Callbacks(on_progress=bar if bar.enabled else None)


def fit(
    runner: Runner,
    data: Prepared,
    config: PipelineConfig,
    callbacks: Callable[[str], Callbacks] = progress_bar,
) -> list[Artifact]:
    """The ladder, cheapest first: the unigram, one n-gram model per order, then each recurrent
    model (``callbacks(model)`` follow its training)."""
    models = [runner(UNIGRAM, data.vocab, config.unigram)]
    models += [ngram_model(runner, data.tables, n, config.ngram) for n in config.ngram.orders]
    models += [runner(RNN, data, m, config.rnn, callbacks(m)) for m in config.rnn.models]
    return models


def ngram_model(runner: Runner, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    """An n-gram model of one order: estimated in parts from partitioned tables, else one task."""
    if tables.stage == PARTS_MERGED.name:
        return runner(NGRAM_PARTS, tables, order, config, runner.mapper)
    return runner(NGRAM, tables, order, config)


def evaluate(runner: Runner, data: Prepared, models: Iterable[Artifact]) -> list[Scored]:
    """Every model on valid and test; a recurrent model also with its state restarted at every
    line, as an n-gram model's context is (the like-for-like figure)."""
    return [
        Scored(
            model,
            runner(EVALUATE, model, data),
            runner(EVALUATE, model, data, True) if model.stage == RNN.name else None,
        )
        for model in models
    ]


def mix(runner: Runner, scored: Sequence[Scored]) -> list[Scored]:
    """The models, and the best recurrent model interpolated with the best n-gram model (best
    on valid) when there are both."""
    best = []
    for family in (RNN.name, NGRAM.name):
        members = [s for s in scored if s.model.stage == family]
        if not members:
            return list(scored)
        best.append(min(members, key=lambda s: load_metrics(s.evaluation)["valid"]["ppl"]))
    mixed = runner(INTERPOLATE, *(s.evaluation for s in best))
    return [*scored, Scored(mixed, mixed)]


def compare(runner: Runner, scored: Sequence[Scored]) -> Artifact:
    """The comparison table, the per-token table and the chart (refuses other targets)."""
    return runner(COMPARE, scored)


def run(
    corpus: str | Path, config: PipelineConfig | str | Path | None = None, **settings: Any
) -> pl.DataFrame:
    """Every model of the ladder trained on ``corpus`` and compared: the comparison table, one
    row per model, as ``seqlm run`` prints it, without Prefect or MLflow.

    ``config``: a config or a TOML file; ``settings`` override its keys by bare name where that
    is unique (``orders=[2, 3]``, ``models=["lstm"]``, ``epochs=1``, ``store="/tmp/store"``).
    """
    if not isinstance(config, PipelineConfig):
        config = load_config(config)
    config = config.with_values(settings)
    runner = Local(Store(config.run.check_store()))
    sources = corpus_sources(corpus, config)
    scored = []
    for tokenization in config.tokenizations():  # one ladder per tokenizer
        data = prepare(runner, sources, tokenization)
        scored += mix(runner, evaluate(runner, data, fit(runner, data, config)))
    return load_comparison(compare(runner, scored))


@dataclass(frozen=True)
class Scorer:
    """A model of the store with what scoring text needs: its vocabulary and tokenizer."""

    model: LanguageModel
    vocab: Vocabulary
    tokenizer: str
    split: Splitter  # the tokenizer applied: a named one, or the model's saved subwords

    def score(self, lines: Iterable[str]) -> Perplexity:
        """Every target of the lines (their tokens, and one ``</s>`` each)."""
        stream = self.vocab.stream(self.split(pl.Series("text", list(lines))))
        return perplexity(self.model.score_stream(stream), stream)

    def sample(self, n_lines: int = 3, seed: int = 0) -> list[str]:
        return sample_lines(
            self.model, self.vocab, n_lines=n_lines, seed=seed, tokenizer=self.tokenizer
        )


def load(folder: str | Path) -> Scorer:
    """A model folder of the store (``data/store/ngram/<key>``, ``.../rnn/<key>``, a unigram's)
    ready to score text and to sample."""
    folder = Path(folder)
    stage = folder.parent.name  # <store>/<stage>/<key>
    if stage not in LOADERS:
        raise SeqlmError(f"{folder}: not a model folder of the store ({stage}/ holds no models)")
    model = Store(folder.parents[1]).get(stage, folder.name)
    if model is None:
        raise SeqlmError(f"{folder}: no such model in the store")
    vocabulary = model_vocabulary(model)
    tokenizer = vocab_tokenizer(vocabulary)
    return Scorer(
        LOADERS[stage](model.path),
        load_vocabulary(vocabulary),
        tokenizer,
        splitter(tokenizer, tokenizer_folder(model)),
    )
