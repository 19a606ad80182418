"""Loading configs: YAML files and dotted `key=value` overrides -> a validated dataclass.

Generic on purpose: it knows dataclasses, type annotations and YAML, and nothing else of dprl,
so every section module (and anything else) can import it without an arrow running back up.

Loading is strict so that a bad config fails before any work starts: an unknown key, a value of
the wrong type or an impossible value raises `ConfigError` naming the dotted key and what was
expected. Each section validates its own values in `check(key_prefix)`.

Composition: any mapping may say `base: FILE` (a path relative to the file that says it). The
base file's mapping is loaded first, and the mapping's other keys are laid over it, section by
section (a list or a value replaces the base's). So a pipeline config can point its `sft:`
section at configs/sft_tiny.yaml and change only what differs.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from typing import Any, Literal

import yaml

BASE_KEY = "base"


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or impossible; the message names the key."""


def require(ok: bool, key: str, expected: str, got: Any) -> None:
    """Raises ConfigError("KEY: expected EXPECTED, got GOT") unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, base: Any = None) -> Any:
    """Checks `value` against the annotation `tp` and returns it in that type. `base`: for a
    section, the default it overlays (see _build)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return _build(tp, value, key + ".", base)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}") from None
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # `lr=inf` arrives as text (YAML spells infinity .inf): say what is wrong with it.
            expected = "a finite number" if _is_non_finite_text(value) else "a number"
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field {key} has an unsupported annotation {tp!r}")


def _section_default(f: dataclasses.Field) -> Any:
    """The default instance of a section field (its default_factory's product), else None."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return value if dataclasses.is_dataclass(value) else None
    return None


def _build(cls: type, data: dict, prefix: str = "", base: Any = None) -> Any:
    """`data` overlaid on `base` (or on cls's defaults). A section's given keys replace only
    themselves: the rest keep the defaults its parent chose (e.g. a stage whose trainer section
    defaults to fp32 stays fp32 when only trainer.lr is set)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key in section {cls.__name__}; "
            f"valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        sub_base = getattr(base, name) if base is not None else _section_default(fields[name])
        if not dataclasses.is_dataclass(sub_base):
            sub_base = None
        kwargs[name] = _convert(value, hints[name], prefix + name, sub_base)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as err:
        # A section that checks itself when built (a runtime options object that is also a
        # config section) names its field; the dotted key says where the section is.
        raise ConfigError(f"{prefix}{err}") from None


def _is_non_finite_text(value: Any) -> bool:
    """Whether `value` is text that Python reads as nan or inf ("inf", "-Infinity", "nan")."""
    try:
        return isinstance(value, str) and not math.isfinite(float(value))
    except ValueError:
        return False


def _first_non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """(dotted key, value) of the first nan or inf in `value`: a number, a list, or a section
    (lists of sections included, e.g. reward.functions[0].tau); None when all are finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(value):
        items = ((f"{key}.{f.name}" if key else f.name, getattr(value, f.name))
                 for f in dataclasses.fields(value))
    else:
        return None
    for item_key, item in items:
        found = _first_non_finite(item, item_key)
        if found:
            return found
    return None


def _check_finite(cfg: Any) -> None:
    """No setting takes nan or inf, so one check covers every number of every config, before the
    sections' own checks: those compare, and `lr > 0` holds for inf (a run would train to NaN
    and exit 0) while nan fails every comparison with a message that hides the cause."""
    found = _first_non_finite(cfg, "")
    if found:
        require(False, found[0], "a finite number (nan and inf are not valid settings)", found[1])


def _check_all(obj: Any, key: str = "") -> None:
    """Runs every section's `check(prefix)`, children first; prefix is its dotted key plus "."."""
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            _check_all(child, f"{key}{f.name}.")
    if hasattr(obj, "check"):
        obj.check(key)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML, so 1e-6, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. rollout.temperature=0.7")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names, e.g. rollout.n=8")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    # YAML reads 1e-6 as a string (it wants 1.0e-6); take it as the number the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as fh:
        try:
            loaded = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path!r}: expected a mapping at the top level")
    return loaded


def _overlay(base: dict, top: dict) -> dict:
    """`top` laid over `base`: mappings merge key by key, anything else in `top` replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_bases(data: Any, folder: str, key: str = "", chain: tuple[str, ...] = ()) -> Any:
    """`data` with every `base: FILE` mapping replaced by FILE's (resolved) mapping with the
    mapping's own keys laid over it. FILE is relative to `folder`; `chain` holds the files being
    resolved, so a file that names itself as its base (directly or not) is an error, not a loop."""
    if not isinstance(data, dict):
        return data
    data = {k: resolve_bases(v, folder, f"{key}{k}.", chain) for k, v in data.items()}
    if BASE_KEY not in data:
        return data
    name = data.pop(BASE_KEY)
    where = f"{key}{BASE_KEY}"
    require(isinstance(name, str) and bool(name), where, "the path of a YAML file", name)
    path = os.path.normpath(os.path.join(folder, os.path.expanduser(name)))
    if path in chain:
        raise ConfigError(f"{where}: {name!r} is already being loaded ({' -> '.join(chain + (path,))})")
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: config file {path!r} does not exist")
    base = resolve_bases(_read_yaml(path), os.path.dirname(path), key, chain + (path,))
    return _overlay(base, data)


def load_config(cls: type, path: str | None = None, overrides: list[str] = ()) -> Any:
    """Builds a validated `cls` from an optional YAML file and dotted `key=value` overrides.
    `base:` keys are resolved relative to the file that holds them (an override's, to the
    current directory)."""
    data = {}
    if path:
        path = os.path.abspath(path)
        data = resolve_bases(_read_yaml(path), os.path.dirname(path), chain=(path,))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    if overrides:
        data = resolve_bases(data, os.getcwd())
    cfg = _build(cls, data)
    _check_finite(cfg)
    _check_all(cfg)
    return cfg


def _plain(value: Any) -> Any:
    """Enum members as their words and tuples as lists, so YAML's safe dumper writes them."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(cfg: Any) -> dict:
    """Every field of `cfg`, sections as mappings, in plain YAML/JSON types."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, directory: str, name: str = "config.yaml") -> str:
    """Writes the resolved config (every field, defaults included) next to a run's results."""
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, name)
    with open(out, "w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
    return out
