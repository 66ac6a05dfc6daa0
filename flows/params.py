"""The pipeline's config as pydantic models, generated from the dataclasses of ``seqlm.config``.

The dataclasses stay the one source of truth (fields, types, defaults, the help text in each
field's metadata, the checks); the models only describe them to Prefect, which derives from them
the typed form of the flow's parameters: one group per section, each setting with its type,
default and description. Values are typed strictly (an int widens to a float, nothing else is
converted), as a TOML config's are; the dataclasses then check them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from seqlm.config import PipelineConfig


def describe(setting: dataclasses.Field[Any]) -> str:
    """A setting's help text (``field(metadata={"help": ...})``), else its name."""
    return setting.metadata.get("help", setting.name)


def setting_type(setting: dataclasses.Field[Any], hint: Any) -> Any:
    """The setting's type; with ``choices`` in its metadata, only those words (in a list: items)."""
    choices = setting.metadata.get("choices")
    if not choices:
        return hint
    word = Literal[tuple(choices)]
    if typing.get_origin(hint) is list:
        return list[word]
    if list[str] in typing.get_args(hint):  # one word, or a list of them
        return word | list[word]
    return word


def default_of(setting: dataclasses.Field[Any]) -> Any:
    if setting.default_factory is not dataclasses.MISSING:
        return setting.default_factory()
    return setting.default


def model_of(config: type) -> type[BaseModel]:
    """A pydantic model with ``config``'s fields (a dataclass), nested dataclasses as nested
    models; unknown keys are refused."""
    hints = typing.get_type_hints(config)
    fields: dict[str, Any] = {}
    for setting in dataclasses.fields(config):
        hint = hints[setting.name]
        if dataclasses.is_dataclass(hint):
            section = model_of(hint)
            fields[setting.name] = (section, Field(section(), description=describe(setting)))
        else:
            fields[setting.name] = (
                setting_type(setting, hint),
                Field(default_of(setting), description=describe(setting)),
            )
    return create_model(
        config.__name__,
        __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
        __module__=__name__,
        **fields,
    )


PipelineSettings = model_of(PipelineConfig)


def to_config(settings: BaseModel) -> PipelineConfig:
    """The checked dataclass config of validated settings."""
    return PipelineConfig.from_dict(settings.model_dump())


def override(section: str, key: str) -> Any:
    """A flow parameter that overrides ``section.key``: None (keep the config's), described as
    the setting is."""
    (setting,) = (f for f in dataclasses.fields(PipelineConfig) if f.name == section)
    (field,) = (f for f in dataclasses.fields(setting.default_factory) if f.name == key)
    return Field(None, description=f"Overrides config.{section}.{key}: {describe(field)}")
