"""The pipeline's configuration: typed sections with defaults that work on the bundled corpus.

A TOML file holds the same sections (``[corpus]``, ``[vocab]``, ...). An override ``key=value``
names a key as ``section.key``, or by its bare name where that is unique; the value is read as a
TOML literal (``0.1``, ``true``, ``[2, 3]``) or else taken as a string, then checked against
the type.
"""

from __future__ import annotations

import math
import tempfile
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from seqlm import subwords
from seqlm.corpus import MAX_WINDOW, TOKENIZERS, WINDOW
from seqlm.errors import SeqlmError
from seqlm.ngram.budget import DEFAULT_MEMORY, parse_memory
from seqlm.ngram.lines import MAX_ORDER
from seqlm.ngram.model import SMOOTHINGS
from seqlm.rnn.config import MODELS as RNN_MODELS
from seqlm.rnn.config import TrainConfig, check_settings

# What every MLflow backend stores (MLflow itself allows 500; its SQL schema has 256).
MAX_EXPERIMENT_NAME = 256
EXECUTORS = ["local", "dask"]


@dataclass(frozen=True)
class CorpusConfig:
    tokenizer: str | list[str] = field(
        default="punct",
        metadata={
            "help": "How lines become tokens: punct splits punctuation off words; whitespace "
            "keeps the text as it is (Penn Treebank style); char makes every character a "
            "symbol; bpe learns subwords on the training text. A list trains the ladder on "
            "each tokenization and compares them by bits per character.",
            "choices": TOKENIZERS,
        },
    )
    text_field: str = field(
        default="text", metadata={"help": "The JSONL field or Parquet column holding the text."}
    )
    bpe_vocab_size: int = field(
        default=subwords.VOCAB_SIZE,
        metadata={
            "help": "Entries of the bpe tokenizer learnt on the training text: <unk>, its "
            "characters, then the most frequent merges (at most what merging every word whole "
            "gives)."
        },
    )
    valid_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Share of each file's lines held out for validation: a contiguous block "
            "after the training lines (unused for files named train, valid and test)."
        },
    )
    test_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Share of each file's lines held out for the test: the last contiguous "
            "block (unused for files named train, valid and test)."
        },
    )
    window: int = field(
        default=WINDOW,
        metadata={
            "help": "Residues per line of a FASTA/FASTQ record: a longer record is cut into "
            f"consecutive lines of this many (1 to {MAX_WINDOW}), so that the held-out blocks "
            "are blocks by position."
        },
    )

    def __post_init__(self) -> None:
        if not self.tokenizers:
            raise SeqlmError("corpus.tokenizer must name at least one tokenizer, not []")
        for tokenizer in self.tokenizers:
            if tokenizer not in TOKENIZERS:
                raise SeqlmError(
                    f"corpus.tokenizer: unknown tokenizer {tokenizer!r} "
                    f"(choose from {', '.join(TOKENIZERS)})"
                )
        _refuse_repeats("corpus.tokenizer", self.tokenizers)
        if not self.text_field:
            raise SeqlmError("corpus.text_field must not be empty")
        if self.bpe_vocab_size < 1:
            raise SeqlmError(f"corpus.bpe_vocab_size must be positive, not {self.bpe_vocab_size}")
        for key in ("valid_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:  # NaN fails too
                raise SeqlmError(f"corpus.{key} must be between 0 and 1, not {value!r}")
        held_out = self.valid_fraction + self.test_fraction
        if held_out >= 1:
            raise SeqlmError(
                f"corpus.valid_fraction and corpus.test_fraction must sum below 1, not {held_out:g}"
            )
        if not 1 <= self.window <= MAX_WINDOW:
            raise SeqlmError(f"corpus.window must be between 1 and {MAX_WINDOW}, not {self.window}")

    @property
    def tokenizers(self) -> list[str]:
        """The tokenizations to train the ladder on: one, or each of a list."""
        return [self.tokenizer] if isinstance(self.tokenizer, str) else list(self.tokenizer)

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (
            1 - self.valid_fraction - self.test_fraction,
            self.valid_fraction,
            self.test_fraction,
        )


@dataclass(frozen=True)
class VocabConfig:
    min_count: int = field(
        default=0,
        metadata={
            "help": "Training types seen fewer times become <unk>. 0 (auto): 1 when the text "
            "already spells <unk> (a cut vocabulary, as Penn Treebank's), else 2, so that <unk> "
            "gets a real estimate."
        },
    )
    max_size: int = field(
        default=0,
        metadata={
            "help": "Most entries, the specials included, the most frequent kept; 0: no limit."
        },
    )

    def __post_init__(self) -> None:
        if self.min_count < 0:
            raise SeqlmError(f"vocab.min_count must be 0 (auto) or more, not {self.min_count}")
        if self.max_size < 0 or 0 < self.max_size <= 3:
            raise SeqlmError(f"vocab.max_size must be 0 (no limit) or above 3, not {self.max_size}")


@dataclass(frozen=True)
class UnigramConfig:
    add_k: float = field(
        default=1.0,
        metadata={
            "help": "k of add-k smoothing, p(w) = (c(w) + k) / (N + k·V); 0: maximum likelihood."
        },
    )

    def __post_init__(self) -> None:
        # 0 is maximum likelihood: (c(w) + k) / (N + k·V) still divides by N > 0.
        if not 0 <= self.add_k < math.inf:
            raise SeqlmError(f"unigram.add_k must be finite and not negative, not {self.add_k!r}")


@dataclass(frozen=True)
class NgramConfig:
    orders: list[int] = field(
        default_factory=lambda: [2, 3, 5],
        metadata={"help": f"One n-gram model per order (1 to {MAX_ORDER}); [] for none."},
    )
    smoothing: str = field(
        default="kn",
        metadata={
            "help": "kn: interpolated modified Kneser-Ney (as KenLM's lmplz); addk: add-k; "
            "mle: maximum likelihood.",
            "choices": SMOOTHINGS,
        },
    )
    add_k: float = field(default=1.0, metadata={"help": "k of the addk smoothing."})
    discount_fallback: bool = field(
        default=True,
        metadata={
            "help": "lmplz's fallback discounts (0.5, 1, 1.5) for an order whose counts-of-counts "
            "give none (tiny corpora, or a small alphabet such as DNA's), with a warning; "
            "false refuses such a corpus, as lmplz does without --discount_fallback. Orders "
            "whose counts give discounts never use it."
        },
    )
    arpa: bool = field(
        default=False,
        metadata={"help": "Also write each n-gram model as an ARPA file in the store."},
    )
    memory: str = field(
        default=DEFAULT_MEMORY,
        metadata={
            "help": "Memory budget of estimation, as lmplz -S: 4G, 512M or a percentage of "
            "physical memory. It changes where the work happens, never the model."
        },
    )

    def __post_init__(self) -> None:
        if any(not 1 <= n <= MAX_ORDER for n in self.orders):
            raise SeqlmError(f"ngram.orders must lie between 1 and {MAX_ORDER}, not {self.orders}")
        parse_memory(self.memory, "ngram.memory")
        _refuse_repeats("ngram.orders", self.orders)
        if self.smoothing not in SMOOTHINGS:
            raise SeqlmError(
                f"ngram.smoothing: unknown smoothing {self.smoothing!r} "
                f"(choose from {', '.join(SMOOTHINGS)})"
            )
        if not 0 < self.add_k < math.inf:  # k = 0 leaves unseen n-grams at probability 0
            raise SeqlmError(f"ngram.add_k must be positive and finite, not {self.add_k!r}")


@dataclass(frozen=True)
class RnnConfig(TrainConfig):
    """Recurrent models trained by truncated BPTT: the library's ``TrainConfig`` (every setting,
    its default and help text) and the list of models to train. The budget is counted in epochs,
    never in seconds, so that one config gives the same models on any machine (bit for bit on
    one machine)."""

    models: list[str] = field(
        default_factory=lambda: ["rnn_tanh", "lstm"],
        metadata={"help": "The recurrent models to train; [] for none.", "choices": RNN_MODELS},
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(RNN_MODELS))
        if unknown:
            raise SeqlmError(
                f"rnn.models: unknown model {unknown[0]!r} (choose from {', '.join(RNN_MODELS)})"
            )
        _refuse_repeats("rnn.models", self.models)
        check_settings(vars(self), spell=lambda key: f"rnn.{key}")


@dataclass(frozen=True)
class RunConfig:
    store: str = field(
        default="data/store",
        metadata={"help": "The artifact store's folder: every stage's output, found again by key."},
    )
    experiment: str = field(
        default="seqlm", metadata={"help": "The MLflow experiment the runs are logged to."}
    )
    executor: str = field(
        default="local",
        metadata={
            "help": "Where the pipeline's tasks run: local, in this process's threads; dask, on "
            "a Dask cluster (run.dask_address), whose workers must all see run.store.",
            "choices": EXECUTORS,
        },
    )
    dask_address: str = field(
        default="",
        metadata={
            "help": "The Dask scheduler of executor dask (tcp://host:port); empty: a local "
            "cluster sized to this machine, started for the run."
        },
    )

    def __post_init__(self) -> None:
        if not self.store:
            raise SeqlmError("run.store must name a folder, not ''")
        if self.executor not in EXECUTORS:
            raise SeqlmError(
                f"run.executor: unknown executor {self.executor!r} "
                f"(choose from {', '.join(EXECUTORS)})"
            )
        if any(c.isspace() for c in self.dask_address):
            raise SeqlmError(f"run.dask_address must not hold spaces: {self.dask_address!r}")
        name = self.experiment
        if not name.strip():
            raise SeqlmError(f"run.experiment must not be empty or blank, not {name!r}")
        if len(name) > MAX_EXPERIMENT_NAME:
            raise SeqlmError(
                f"run.experiment must be at most {MAX_EXPERIMENT_NAME} characters, not {len(name)}"
            )
        if not name.isprintable():
            raise SeqlmError(f"run.experiment must not hold control characters: {name!r}")

    def check_store(self) -> Path:
        """The store's folder, checked writable or creatable before any work (nothing made)."""
        return writable_folder(Path(self.store), "run.store", may_be_missing=True)


@dataclass(frozen=True)
class PipelineConfig:
    corpus: CorpusConfig = field(
        default_factory=CorpusConfig,
        metadata={"help": "Reading the corpus: tokenizer, text field, held-out splits."},
    )
    vocab: VocabConfig = field(
        default_factory=VocabConfig,
        metadata={"help": "The vocabulary shared by every model."},
    )
    unigram: UnigramConfig = field(
        default_factory=UnigramConfig, metadata={"help": "The unigram model."}
    )
    ngram: NgramConfig = field(
        default_factory=NgramConfig,
        metadata={"help": "The n-gram models: orders and smoothing."},
    )
    rnn: RnnConfig = field(
        default_factory=RnnConfig,
        metadata={
            "help": "The recurrent models, trained by truncated backpropagation through time."
        },
    )
    run: RunConfig = field(
        default_factory=RunConfig,
        metadata={
            "help": "Where results go and where the work runs: the artifact store, the MLflow "
            "experiment and the executor (a deployment run cannot change them: seqlm serve "
            "sets them)."
        },
    )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def tokenizations(self) -> list[PipelineConfig]:
        """One config per tokenizer of ``corpus.tokenizer`` (itself, for one)."""
        return [
            replace(self, corpus=replace(self.corpus, tokenizer=tokenizer))
            for tokenizer in self.corpus.tokenizers
        ]

    def flat(self) -> dict[str, Any]:
        """``section.key`` → value, as MLflow params."""
        return {f"{s}.{k}": v for s, section in self.to_dict().items() for k, v in section.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        sections = _sections()
        for name, values in data.items():
            if name not in sections:
                raise SeqlmError(f"unknown config section {name!r} (known: {', '.join(sections)})")
            if not isinstance(values, Mapping):
                raise SeqlmError(f"config section {name!r} must be a table of keys")
            for key in values:
                if key not in _keys(sections[name]):
                    raise SeqlmError(
                        f"unknown config key '{name}.{key}' "
                        f"(known: {', '.join(_keys(sections[name]))})"
                    )
        built = {}
        for name, section in sections.items():
            hints = typing.get_type_hints(section)
            values = data.get(name, {})
            checked = {k: _check(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
            built[name] = section(**checked)
        return cls(**built)

    def with_overrides(self, overrides: Iterable[str]) -> PipelineConfig:
        """``key=value`` strings, the value read as a TOML literal (else as a string)."""
        values = {}
        for item in overrides:
            name, sep, raw = item.partition("=")
            if not sep:
                raise SeqlmError(f"override {item!r} is not key=value")
            values[name.strip()] = _parse_literal(raw.strip())
        return self.with_values(values)

    def with_values(self, values: Mapping[str, Any]) -> PipelineConfig:
        """Keys (``section.key`` or a unique bare name) set to values, checked like a file's."""
        data = self.to_dict()
        sections = _sections()
        for name, value in values.items():
            section, key = _resolve(name, sections)
            data[section][key] = value
        return PipelineConfig.from_dict(data)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Defaults, then a TOML file's values, then ``key=value`` overrides."""
    config = PipelineConfig()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SeqlmError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise SeqlmError(f"{path}: invalid TOML ({e})") from None
        try:
            config = PipelineConfig.from_dict(data)
        except SeqlmError as e:
            raise SeqlmError(f"{path}: {e}") from None
    return config.with_overrides(overrides)


def writable_folder(path: Path, name: str, *, may_be_missing: bool = False) -> Path:
    """``path``, a folder we can write in, or a SeqlmError that starts with ``name`` (the setting
    or option that gave the path). ``may_be_missing``: a folder the run will make; its nearest
    existing ancestor must then be a folder we can write in. Nothing is created."""
    existing = path
    while may_be_missing and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise SeqlmError(f"{name}: {existing} is not a directory")
    if not existing.is_dir():
        raise SeqlmError(f"{name}: {path}: no such directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise SeqlmError(f"{name}: cannot write in {existing} ({e.strerror})") from None
    return path


def writable_file(path: Path, name: str) -> Path:
    """``path``, a file we may write: not a folder, in an existing folder we can write in."""
    if path.is_dir():
        raise SeqlmError(f"{name}: {path} is a directory")
    writable_folder(path.parent, name)
    return path


def _refuse_repeats(name: str, values: list[Any]) -> None:
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise SeqlmError(f"{name} lists {repeated!r} twice: {values}")


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(PipelineConfig)}  # type: ignore[misc]


def _keys(section: type) -> list[str]:
    return [f.name for f in fields(section)]


def _resolve(name: str, sections: dict[str, type]) -> tuple[str, str]:
    if "." in name:
        section, _, key = name.partition(".")
        if section in sections and key in _keys(sections[section]):
            return section, key
        raise SeqlmError(f"unknown config key {name!r}")
    owners = [s for s, cls in sections.items() if name in _keys(cls)]
    if not owners:
        raise SeqlmError(f"unknown config key {name!r}")
    if len(owners) > 1:
        options = " or ".join(f"{s}.{name}" for s in owners)
        raise SeqlmError(f"config key {name!r} is ambiguous: say {options}")
    return owners[0], name


def _parse_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the type ``hint`` (ints widen to floats), else a SeqlmError."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SeqlmError(f"config key {name!r} needs a list, not {value!r}")
        return [_check(name, v, item) for v in value]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(name, value, option)
            except SeqlmError:
                continue
        raise SeqlmError(f"config key {name!r} cannot be {value!r}")
    if hint is type(None) and value is None:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise SeqlmError(f"{name} must be a finite number, not {value!r}")
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise SeqlmError(
        f"config key {name!r} needs a {getattr(hint, '__name__', hint)}, not {value!r}"
    )
