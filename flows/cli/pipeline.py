"""``seqlm run | serve | compare``: the orchestrated pipeline, its deployments and its tracked runs.

Prefect and MLflow are imported by the commands when they run, after ``flows.cli.main`` applied
the project's environment defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.config import load_config, writable_file
from seqlm.corpus import DEFAULT_CORPUS, discover
from seqlm.files import atomic_write_text
from seqlm.report import LIKE_FOR_LIKE, figures, to_markdown


def add_commands(commands: argparse._SubParsersAction) -> None:
    add_run_command(commands)
    add_serve_command(commands)
    add_compare_command(commands)


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run the whole pipeline (Prefect flow corpus-to-model) and print the comparison",
        description="Ingest a corpus, build the vocabulary, train every model, score each on the "
        "same held-out text and print the perplexity table. Runs are tracked in MLflow "
        "(sqlite:///mlruns/mlflow.db unless MLFLOW_TRACKING_URI is set); outputs are reused "
        "from the artifact store when their inputs have not changed.",
    )
    run.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
        help="a text file (.txt, .txt.gz, .jsonl, .parquet), a directory of such files, or a "
        "directory of split files (train.txt/valid.txt/test.txt, ptb.train.txt, ...) "
        f"(default: {DEFAULT_CORPUS})",
    )
    run.add_argument("--config", metavar="FILE.toml", help="a TOML file of config sections")
    run.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, as section.key or a unique bare key "
        "(e.g. --set tokenizer=whitespace --set vocab.min_count=1); repeatable",
    )
    run.add_argument("--report", metavar="FILE.json", help="also write the table as JSON")
    run.set_defaults(func=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    # Bad input is caught here, before Prefect starts a server.
    config = load_config(args.config, args.set)
    discover(args.corpus)
    config.run.check_store()
    if args.report:
        writable_file(Path(args.report), "--report")
    from flows.local_server import prefect_api

    with prefect_api(warm_up=warm_up), quiet_failures(args):
        from flows.corpus_to_model import PresentationFailed, corpus_to_model

        try:
            result = corpus_to_model(corpus=args.corpus, config=config.to_dict())
        except PresentationFailed as e:  # the models are compared: show them, then the error
            show_result(e.result, args.report)
            raise
    show_result(result, args.report)
    return 0


def warm_up() -> None:
    """While a temporary Prefect server starts: the flow's imports, and one try at the MLflow
    store, whose own client would retry one that is down for minutes."""
    import_module("flows.corpus_to_model")
    from tasks.tracking import check_reachable, tracking_uri

    check_reachable(tracking_uri())


def show_result(result: dict[str, Any], report: str | None) -> None:
    """The report first (a closed stdout must not lose it), then the samples and the table."""
    rows = result["comparison"]
    if report:
        atomic_write_text(Path(report), json.dumps(rows, indent=2))
    for name, lines in result["samples"].items():
        print(f"{name}:", *(f"  {line}" for line in lines), sep="\n")
    print()
    print(to_markdown(figures(pl.DataFrame(rows))))  # the timings are in the report and MLflow
    print(LIKE_FOR_LIKE)


@contextmanager
def quiet_failures(args: argparse.Namespace) -> Iterator[None]:
    """Keep Prefect's reports of failed runs off the terminal (they still reach the run's log):
    the error shows once, as the command's last line. ``--verbose`` shows them all."""
    handlers = [] if args.verbose else logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(_not_prefect_failure)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_not_prefect_failure)


def _not_prefect_failure(record: logging.LogRecord) -> bool:
    """False for a flow or task run's failure as Prefect logs it: its traceback and "Finished in
    state Failed" (its INFO lines show only with --verbose anyway: ``flows.cli``)."""
    return not (
        record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        and record.levelno >= logging.ERROR
    )


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the corpus-to-model deployments (on-demand and nightly) to a Prefect server",
        description="Register and serve the deployments 'corpus-to-model/on-demand' and "
        "'corpus-to-model/nightly' until interrupted; start runs with `prefect deployment run`. "
        "Needs a Prefect server: PREFECT_API_URL, or http://127.0.0.1:4200/api by default.",
    )
    serve.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help="the deployments' default corpus parameter"
    )
    serve.add_argument(
        "--cron",
        help="the nightly deployment's schedule, a cron expression (default: 03:00 every day)",
    )
    serve.add_argument(
        "--corpus-root",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder the deployment runs may read corpora from; repeatable (default: "
        "SEQLM_CORPUS_ROOTS, os.pathsep-separated, else the working directory)",
    )
    serve.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a run setting of the deployments' runs, which a run cannot change (e.g. --set "
        "run.executor=dask --set run.dask_address=tcp://host:8786 --set run.store=DIR); "
        "repeatable",
    )
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from flows.serve import NIGHTLY, serve_deployments

    serve_deployments(args.corpus, args.cron or NIGHTLY, args.corpus_root, args.set)
    return 0


def add_compare_command(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="a table of recent pipeline runs and their models' test perplexities, from MLflow",
        description="Read the MLflow store (sqlite:///mlruns/mlflow.db unless MLFLOW_TRACKING_URI "
        "is set) and print one row per recent finished pipeline run: its start, corpus, each "
        "model's test perplexity in ladder order (unigram, n-grams, rnn_tanh, gru, lstm, "
        "interpolations) and the settings that differ between the runs listed. The MLflow UI "
        "shows the same runs in full.",
    )
    compare.add_argument(
        "--experiment", default="seqlm", help="the MLflow experiment (default: seqlm)"
    )
    compare.add_argument(
        "--last", type=int, default=10, help="how many runs, newest first (default: 10)"
    )
    compare.add_argument(
        "--json",
        action="store_true",
        help="print the runs as a JSON list (run id, name, started, corpus, test_ppl by model, "
        "config that differs) instead of a table",
    )
    compare.set_defaults(func=compare_runs)


def compare_runs(args: argparse.Namespace) -> int:
    from tasks.tracking import ladder_order, recent_pipelines

    runs = recent_pipelines(args.experiment, args.last)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no finished runs in {args.experiment!r}")
        return 0
    models = sorted({m for r in runs for m in r["test_ppl"]}, key=ladder_order)
    table = pl.DataFrame(
        [
            {"started": r["started"][:16].replace("T", " "), "run": r["run"][:8]}
            | {"corpus": r["corpus"]}
            | {m: r["test_ppl"].get(m) for m in models}
            | {"config": " ".join(f"{k}={v}" for k, v in r["config"].items())}
            for r in runs
        ],
        infer_schema_length=None,
    )
    print(to_markdown(table))
    return 0
