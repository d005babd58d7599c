"""Typed dataclass configs: to and from dicts, JSON and TOML, with dotted command-line overrides.

Every run is described by dataclasses (``GPTConfig``, ``TrainConfig``, ``DataConfig`` ...). This module
turns nested dicts into those dataclasses with type checks, so a typo in a TOML file or a flag is an
error that lists the valid keys instead of a silently ignored setting.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 1e-3
    ...     steps: int = 10
    >>> from_dict(Opt, {"lr": "3e-4"}).lr
    0.0003
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from qkv.errors import QKVError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as a plain JSON-able dict."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from JSON, TOML or a command-line string) to the annotated type `tp`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except QKVError as e:
                errors.append(str(e))
        raise QKVError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise QKVError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise QKVError(f"{key}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            # "1,2", "(1, 2)", "[1, 2]", '["red triangle"]', "[]" (an empty list)
            bare = value.strip().strip("[]()")
            value = [v.strip().strip("'\"") for v in bare.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise QKVError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise QKVError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise QKVError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise QKVError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise QKVError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise QKVError(f"{key}: expected a string, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise QKVError(f"{key}: expected a table, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise `QKVError`.

    Validation in the dataclass's ``__post_init__`` (``ValueError``) is re-raised as `QKVError` too.
    """
    if not isinstance(data, dict):
        raise QKVError(f"{prefix or cls.__name__}: expected a table of settings, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = ", ".join(prefix + k for k in fields)
        raise QKVError(f"unknown setting {prefix + unknown[0]!r}; valid keys: {valid}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise QKVError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise QKVError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QKVError(f"{path}: not valid TOML ({e})") from None


def parse_overrides(args: list[str]) -> dict:
    """``["--train.lr", "3e-4", "--model.bias=false"]`` -> ``{"train": {"lr": "3e-4"}, "model": {...}}``.

    Values stay strings; `from_dict` converts them to the field's type.
    """
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise QKVError(f"unexpected argument {arg!r}; overrides look like --section.key VALUE")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise QKVError(f"--{key} needs a value")
            value = args[i + 1]
            i += 2
        key = key.replace("-", "_")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise QKVError(f"--{key}: {p} is a value, not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge `extra` into a copy of `base` (later wins)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
