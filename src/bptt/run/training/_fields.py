"""Configuration models: pydantic does the validating; every error names its field.

A configuration is a :class:`ConfigModel` (pydantic v2): typed fields with bounds and a
description each, unknown keys refused. Numbers are strict as a person writes them
in TOML: a bool or a string is not a number, an integral float is an integer, and a
float must be finite. A field whose values are the names of a registry (tasks,
cells, recipes) carries a :class:`Names` marker, read again at every validation and by
the command line, so a name registered later is valid and listed in ``--help``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import tomli_w
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo

from bptt.run.training._io import CONFIG_BYTES, read_bounded_text

__all__ = [
    "Bool",
    "ConfigError",
    "ConfigModel",
    "Float",
    "Int",
    "Names",
    "Text",
    "config_error",
    "field_choices",
    "load_toml",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    Attributes:
        field: the field (or flag) at fault.
        message: what it accepts, and what it got.
    """

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # picklable: it crosses process pools (benchmarks, Ray)
        return type(self), (self.field, self.message)


@dataclass(frozen=True)
class Names:
    """Marks a string field whose values are a registry's names, read when needed."""

    names: Callable[[], Iterable[str]]

    def __call__(self) -> tuple[str, ...]:
        return tuple(self.names())


def _field(info: ValidationInfo) -> str:
    """The field being validated: these validators are attached to model fields only,
    which pydantic names."""
    return cast(str, info.field_name)


def _plain_number(value: Any) -> Any:
    """A NumPy scalar (``np.int64(4)``, ``np.float32(0.5)``) as Python's int or float."""
    item = getattr(value, "item", None)
    if type(value).__module__ == "numpy" and callable(item) and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def _integer(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    value = _plain_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(_field(info), f"must be an integer; got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(_field(info), f"must be an integer; got {value!r}")
        return int(value)
    return value


def _real(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    value = _plain_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(_field(info), f"must be a number; got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float's range, given from Python
        message = "must be finite; got an integer beyond 1.8e308"
        raise ConfigError(_field(info), message) from None
    if not math.isfinite(value):
        raise ConfigError(_field(info), f"must be finite; got {value!r}")
    return value


def _boolean(value: Any, info: ValidationInfo) -> Any:
    value = _plain_number(value)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(_field(info), f"must be true or false; got {value!r}")
    return value


def _text(value: Any, info: ValidationInfo) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(_field(info), f"must be a non-empty string; got {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_real)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
Text = Annotated[str, BeforeValidator(_text)]


def field_choices(field: FieldInfo) -> tuple[str, ...] | None:
    """The values a field allows (a Literal, or a :class:`Names` registry, optionally
    inside ``X | None``), in order; None for an open field."""
    for meta in field.metadata:
        if isinstance(meta, Names):
            return meta()
    return _choices_of(field.annotation)


def _choices_of(annotation: Any) -> tuple[str, ...] | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Names):
            return meta()
    if get_origin(annotation) is Literal:
        return tuple(get_args(annotation))
    for arg in get_args(annotation):
        if arg is not type(None) and (found := _choices_of(arg)) is not None:
            return found
    return None


_Config = TypeVar("_Config", bound="ConfigModel")


class ConfigModel(BaseModel):
    """A validated configuration: unknown keys refused, every error a :class:`ConfigError`.

    Fields left None may be derived from others by a subclass's ``after`` validator.
    """

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise config_error(err, type(self)) from None

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:
        """A validated config from a mapping (a TOML table, flags).

        Raises:
            ConfigError: an unknown key, or a value its field refuses.
        """
        if not isinstance(values, dict):
            raise ConfigError("config", f"must be a table of settings; got {values!r}")
        return cls(**{str(k): v for k, v in values.items()})

    @classmethod
    def flag_fields(cls) -> dict[str, FieldInfo]:
        """The keys of the flat form (one a command-line flag), each with its field."""
        return dict(cls.model_fields)

    @classmethod
    def error_field(cls, loc: tuple[int | str, ...]) -> str:
        """The key an error at pydantic's location ``loc`` is reported under."""
        return str(loc[0]) if loc else "config"

    def replace(self: _Config, **changes: Any) -> _Config:
        """A validated copy with some fields changed (None values are ignored)."""
        kept = {k: v for k, v in changes.items() if v is not None}
        return self.from_dict({**self.to_dict(), **kept})

    def to_dict(self) -> dict[str, Any]:
        """All fields, None included."""
        return self.model_dump()

    def to_toml(self) -> str:
        """TOML text of the config; fields that are None are left out (TOML has no null)."""
        return tomli_w.dumps({k: v for k, v in self.to_dict().items() if v is not None})

    @model_validator(mode="after")
    def _names_are_known(self) -> ConfigModel:
        self.check_names()
        return self

    def check_names(self) -> None:
        """Refuse a registry field's value that is not a registered name.

        Raises:
            ConfigError: naming the field and the names it accepts.
        """
        for name, field in type(self).model_fields.items():
            allowed, value = field_choices(field), getattr(self, name)
            if allowed is not None and value is not None and value not in allowed:
                message = f"must be one of {', '.join(allowed)}; got {value!r}"
                raise ConfigError(name, message)


def config_error(err: ValidationError, model: type[ConfigModel]) -> ConfigError:
    """The first problem pydantic found, as a ConfigError naming its field."""
    first = err.errors(include_url=False)[0]
    context = first.get("ctx") or {}
    loc = tuple(first["loc"])
    found = context.get("error")
    if isinstance(found, ConfigError):  # raised by our own validators
        if len(loc) <= 1:
            return found
        # a nested model's, which named its own field: named as the outer model names it
        return ConfigError(model.error_field((*loc, found.field)), found.message)
    field_name = model.error_field(loc)
    value, kind = first.get("input"), first["type"]
    if kind == "extra_forbidden":
        known = ", ".join(sorted(model.flag_fields()))
        return ConfigError(field_name, f"unknown key; known keys are {known}")
    if kind == "missing":
        return ConfigError(field_name, "must be given")
    bounds = {
        "greater_than": "> {gt}",
        "greater_than_equal": ">= {ge}",
        "less_than": "< {lt}",
        "less_than_equal": "<= {le}",
    }
    if kind in bounds:
        return ConfigError(field_name, f"must be {bounds[kind].format(**context)}; got {value!r}")
    if kind == "literal_error":
        field = model.flag_fields().get(field_name)
        allowed = (field_choices(field) if field is not None else None) or ()
        return ConfigError(field_name, f"must be one of {', '.join(allowed)}; got {value!r}")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(field_name, f"{message[:1].lower()}{message[1:]}; got {value!r}")


def load_toml(path: str | Path) -> dict[str, Any]:
    """The table of a TOML config file, as a dict (not yet validated).

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        text = read_bounded_text(path, CONFIG_BYTES)  # not /dev/zero, not a huge file
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError("config", f"{path} is not UTF-8 text: {err.reason}") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("config", f"{path} is not valid TOML: {err}") from err
    except RecursionError:  # tables or arrays nested thousands deep
        raise ConfigError("config", f"{path} nests tables or arrays too deeply") from None
