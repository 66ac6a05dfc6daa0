"""The flow's parameters as Prefect derives them: a typed form generated from the config
dataclasses, checked by Prefect's own schema validation and then by the config's checks."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema_from_entrypoint
from prefect.utilities.schema_tools.validation import ValidationError, validate

from flows.corpus_to_model import corpus_to_model
from flows.guard import check_deployment_request
from flows.params import PipelineSettings, to_config
from seqlm.config import PipelineConfig, RunConfig
from seqlm.corpus import DEFAULT_CORPUS, TOKENIZERS
from seqlm.errors import SeqlmError
from seqlm.rnn.config import MODELS as RNN_MODELS
from seqlm.rnn.config import SCHEDULES, TrainConfig
from tests.helpers import BUNDLED

SCHEMA = corpus_to_model.parameters.model_dump()


def section_schema(name: str) -> dict:
    ref = SCHEMA["definitions"]["PipelineConfig"]["properties"][name]["$ref"]
    return SCHEMA["definitions"][ref.rsplit("/", 1)[1]]


def server_check(parameters: dict) -> None:
    """What the Prefect server does with a deployment run's parameters before the run starts."""
    validate(parameters, SCHEMA, raise_on_error=True, ignore_required=True)


def test_the_form_has_every_section_and_setting_with_default_and_description():
    config = SCHEMA["properties"]["config"]
    assert config["default"] == asdict(PipelineConfig())
    assert "seqlm TOML config" in config["description"]
    sections = SCHEMA["definitions"]["PipelineConfig"]
    assert list(sections["properties"]) == ["corpus", "vocab", "unigram", "ngram", "rnn", "run"]
    assert sections["additionalProperties"] is False
    for section in dataclasses.fields(PipelineConfig):
        assert sections["properties"][section.name]["description"] == section.metadata["help"]
        form = section_schema(section.name)
        assert form["additionalProperties"] is False
        assert list(form["properties"]) == [
            f.name for f in dataclasses.fields(section.default_factory)
        ]
        for setting in dataclasses.fields(section.default_factory):
            shown = form["properties"][setting.name]
            assert shown["default"] == asdict(section.default_factory())[setting.name]
            assert shown["description"] == setting.metadata["help"], setting.name
    corpus = section_schema("corpus")["properties"]
    one, several = corpus["tokenizer"]["anyOf"]  # a tokenizer, or a list of them
    assert one["enum"] == several["items"]["enum"] == list(TOKENIZERS)
    assert corpus["valid_fraction"]["type"] == "number"
    assert section_schema("ngram")["properties"]["orders"]["items"] == {"type": "integer"}
    models = section_schema("rnn")["properties"]["models"]
    assert models["items"]["enum"] == list(RNN_MODELS)


def test_every_training_setting_of_the_library_is_in_the_rnn_form():
    form = section_schema("rnn")["properties"]
    assert set(form) == {f.name for f in dataclasses.fields(TrainConfig)} | {"models"}
    assert form["schedule"]["enum"] == list(SCHEDULES)
    settings = PipelineSettings.model_validate({"rnn": {"patience": 5, "schedule": "fixed"}})
    config = to_config(settings)
    assert (config.rnn.patience, config.rnn.schedule) == (5, "fixed")


def test_corpus_and_the_overrides_are_described():
    properties = SCHEMA["properties"]
    assert list(properties) == ["corpus", "orders", "recurrent_models", "max_minutes", "config"]
    assert properties["corpus"]["default"] == DEFAULT_CORPUS
    assert "corpus roots" in properties["corpus"]["description"]
    orders = properties["orders"]
    assert orders["default"] is None
    assert orders["description"].startswith("Overrides config.ngram.orders: One n-gram model")
    assert properties["max_minutes"]["description"].startswith("Overrides config.rnn.max_minutes")
    assert SCHEMA["required"] == []


def test_prefect_yaml_deploys_the_flow_with_its_form_enforced():
    project = Path(__file__).parents[1]
    deployments = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    assert [d["name"] for d in deployments] == ["on-demand", "nightly"]
    for deployment in deployments:
        assert deployment["enforce_parameter_schema"] is True
        entrypoint = str(project / deployment["entrypoint"])
        assert parameter_schema_from_entrypoint(entrypoint).model_dump() == SCHEMA
        server_check(deployment["parameters"])


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"config": {"rnn": {"lr": "fast"}}}, "config.rnn.lr"),
        ({"config": {"ngram": {"orders": ["2"]}}}, "config.ngram.orders[0]"),
        ({"config": {"corpus": {"tokenizer": "nonsense"}}}, "config.corpus.tokenizer"),
        ({"config": {"vocab": {"min_count": True}}}, "config.vocab.min_count"),
        ({"orders": 3}, "orders"),
    ],
)
def test_the_server_refuses_a_value_of_the_wrong_type_naming_it(parameters, field):
    with pytest.raises(
        ValidationError, match=f"^Validation failed for field {re.escape(repr(field))}"
    ):
        server_check(parameters)


@pytest.mark.parametrize("section", ["config", "config.rnn"])
def test_the_server_refuses_an_unknown_key(section):
    parameters = (
        {"config": {"rnn": {"lrr": 1}}} if section == "config.rnn" else {"config": {"x": {}}}
    )
    with pytest.raises(ValidationError, match=rf"field '{section}'.*not allowed"):
        server_check(parameters)


def test_a_well_typed_bad_value_passes_the_schema_and_the_config_names_it():
    parameters = {"config": {"rnn": {"lr": -1}}}
    server_check(parameters)
    settings = PipelineSettings.model_validate(parameters["config"])
    with pytest.raises(SeqlmError, match=r"^rnn\.lr must be positive"):
        to_config(settings)


def test_settings_round_trip_to_the_config():
    values = {"vocab": {"min_count": 1}, "ngram": {"orders": [2], "smoothing": "addk"}}
    values["rnn"] = {"lr": 1, "models": []}  # an int widens to a float, as in a TOML file
    config = to_config(PipelineSettings.model_validate(values))
    assert config == PipelineConfig.from_dict(values)
    assert config.rnn.lr == 1.0 and isinstance(config.rnn.lr, float)
    assert to_config(PipelineSettings()) == PipelineConfig()


def test_a_deployment_may_send_the_run_section_back_unchanged(tmp_path):
    corpus = tmp_path / "a.txt"
    corpus.write_text("a b c\n" * 20)
    roots = [tmp_path.resolve()]
    check_deployment_request(str(corpus), PipelineSettings().model_dump(), roots)
    changed = PipelineSettings.model_validate({"run": {"experiment": "other"}}).model_dump()
    assert changed["run"]["store"] == RunConfig().store
    with pytest.raises(SeqlmError, match=r"^run\.experiment: a deployment run cannot set it"):
        check_deployment_request(str(corpus), changed, roots)


@pytest.mark.slow
def test_the_flow_refuses_bad_settings_before_any_work(prefect_server, tmp_path):
    store = tmp_path / "store"
    run = {"store": str(store), "experiment": "params"}
    with pytest.raises(SeqlmError, match=r"^rnn\.lr must be positive"):
        corpus_to_model(corpus=str(BUNDLED), config={"run": run, "rnn": {"lr": -1}})
    with pytest.raises(ParameterTypeError, match=r"rnn\.lr"):
        corpus_to_model(corpus=str(BUNDLED), config={"run": run, "rnn": {"lr": "fast"}})
    with pytest.raises(SeqlmError, match=r"^ngram\.orders must lie between 1 and"):
        corpus_to_model(corpus=str(BUNDLED), orders=[0], config={"run": run})
    assert not store.exists()
