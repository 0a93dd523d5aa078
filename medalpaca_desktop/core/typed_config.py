"""What the typed YAML configs (trainer.config.TrainConfig, bench.config.BenchConfig) share.

Fields carry their help (the GUI's tooltips) and group in dataclass metadata; YAML
values are checked against each field's default type with one-line errors that
name the field; configs are written atomically so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import tempfile
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and is one line."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 5, 5


def short_repr(value: Any) -> str:
    """A bounded repr for messages: YAML anchors can make a value whose full repr never ends."""
    return _SHORT.repr(value)


def _scalar(value: Any) -> Any:
    """A list item or mapping value must be one value: str() of nested YAML (aliases) can be huge."""
    if isinstance(value, (list, dict, set, tuple)):
        raise TypeError
    return value


def config_field(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,  # noqa: A002
                 group: str = "common", **extra: Any) -> Any:
    """A dataclass field whose metadata holds its help text, group and limits (minimum, choices, ...)."""
    meta = {"help": help, "group": group, **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def coerce_value(name: str, f: dataclasses.Field, value: Any, list_item: Callable[[Any], Any] = str) -> Any:
    """`value` as the type of the field's default: YAML gives the right types mostly; accept ints for
    floats, one string for a list, None for empty text or an empty mapping."""
    default = default_of(f)
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, list):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise TypeError
            return [list_item(_scalar(v)) for v in value]
        if isinstance(default, dict):
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise TypeError
            return {str(_scalar(k)): str(_scalar(v)) for k, v in value.items()}
        if isinstance(default, str):
            if value is None:
                return ""
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}: expected {type(default).__name__}, got {short_repr(value)}") from None
    return value


def check_limits(name: str, f: dataclasses.Field, value: Any) -> None:
    """The field's own rules from its metadata (choices, minimum, maximum); ConfigError naming it."""
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{name}: {short_repr(value)} is not one of {', '.join(choices)}")
    lo, hi = f.metadata.get("minimum"), f.metadata.get("maximum")
    if isinstance(value, float) and math.isnan(value) and (lo is not None or hi is not None):
        raise ConfigError(f"{name}: nan is not a number")
    if lo is not None and value < lo:
        raise ConfigError(f"{name}: {value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}: {value} is above the maximum {hi}")


def check_all_limits(config: Any) -> None:
    """`check_limits` for every field of a config dataclass instance, in field order."""
    for f in dataclasses.fields(config):
        check_limits(f.name, f, getattr(config, f.name))


# libyaml's parser refuses deep nesting at once; the pure-Python one takes seconds to hit the recursion limit.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's YAML mapping, or a ConfigError that says what is wrong with the file."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder; give its config.yaml") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of keys to values")
    return data


def save_yaml_atomic(data: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temp file + rename): a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
