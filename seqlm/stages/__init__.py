"""The pipeline's stages over the artifact store, callable by hand without Prefect or MLflow.

Each stage has a ``plan_*`` function (what its key is made of: no work done) and a function that
builds the artifact, or finds it when its key already exists.
"""

from seqlm.stages.data import (
    TABLES,
    VOCAB_FILE,
    count_tables,
    ingest,
    list_count_tables,
    load_vocabulary,
    plan_count_tables,
    plan_ingest,
    plan_shard_counts,
    plan_vocabulary,
    shard_counts,
    vocabulary,
)
from seqlm.stages.evaluation import (
    CHART_FILE,
    EVAL_SPLITS,
    TOKENS_FILE,
    comparison,
    evaluation,
    interpolation,
    load_metrics,
    plan_comparison,
    plan_evaluation,
    plan_interpolation,
)
from seqlm.stages.models import (
    CHECKPOINTS,
    CURVE_FILE,
    HISTORY_FILE,
    LOADERS,
    MODEL,
    ngram,
    plan_ngram,
    plan_rnn,
    plan_unigram,
    rnn,
    unigram,
)

# Every stage's folder name in the store, in pipeline order.
STAGES = (
    "ingest",
    "counts",
    "vocab",
    "tables",
    "unigram",
    "ngram",
    "rnn",
    "evaluate",
    "interpolate",
    "compare",
)

__all__ = [
    "CHART_FILE",
    "CHECKPOINTS",
    "CURVE_FILE",
    "EVAL_SPLITS",
    "HISTORY_FILE",
    "LOADERS",
    "MODEL",
    "STAGES",
    "TABLES",
    "TOKENS_FILE",
    "VOCAB_FILE",
    "comparison",
    "count_tables",
    "evaluation",
    "ingest",
    "interpolation",
    "list_count_tables",
    "load_metrics",
    "load_vocabulary",
    "ngram",
    "plan_comparison",
    "plan_count_tables",
    "plan_evaluation",
    "plan_ingest",
    "plan_interpolation",
    "plan_ngram",
    "plan_rnn",
    "plan_shard_counts",
    "plan_unigram",
    "plan_vocabulary",
    "rnn",
    "shard_counts",
    "unigram",
    "vocabulary",
]
