"""Dataclass configs with defaults, a YAML file and `--set a.b=c` overrides (OmegaConf structured configs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lowlabel.errors import LowlabelError
from lowlabel.files import write_text

T = TypeVar("T")


def config_keys(schema: Any) -> list[str]:
    """Every dotted key of a config dataclass (class or instance), nested sections flattened."""

    def walk(node: Any, prefix: str) -> list[str]:
        keys = []
        for name in node:
            child = node._get_node(name)
            if isinstance(child, DictConfig):
                keys += walk(child, f"{prefix}{name}.")
            else:
                keys.append(f"{prefix}{name}")
        return keys

    return walk(OmegaConf.structured(schema), "")


def _explain(err: OmegaConfBaseException, schema: Any, source: str) -> LowlabelError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError):
        return LowlabelError(
            f"unknown config key '{key}' in {source}; valid keys: {', '.join(config_keys(schema))}"
        )
    if isinstance(err, ValidationError):
        return LowlabelError(f"bad value for config key '{key}' in {source}: {err.msg.splitlines()[0]}")
    return LowlabelError(f"invalid config in {source}: {err}")


def load_config(schema: type[T] | T, file: str | Path | None = None, overrides: Sequence[str] = (),
                options: Mapping[str, Any] | None = None) -> T:
    """The one precedence rule: defaults of `schema` < the YAML `file` < a command's own `options` (dotted key ->
    value, e.g. {"train.max_steps": 800} from `--iterations 800`; None values are options the user did not give)
    < `key=value` overrides (`--set`). Returns a `schema` instance.

    Unknown keys are rejected with the list of valid keys; a value of the wrong type names its key.
    """
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    merged = base
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise LowlabelError(f"config file {path} does not exist")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise _explain(err, schema, str(path)) from None
        except Exception as err:  # YAML syntax errors come from the yaml parser
            raise LowlabelError(f"config file {path} is not valid YAML: {err}") from None
    for key, value in (options or {}).items():
        if value is None:
            continue
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(_nested(key, value)))
        except OmegaConfBaseException as err:
            raise _explain(err, schema, f"option {key}") from None
    for item in overrides:
        if "=" not in item:
            raise LowlabelError(f"override '{item}' must look like key=value (e.g. train.max_steps=100)")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise _explain(err, schema, f"--set {item}") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _nested(key: str, value: Any) -> dict[str, Any]:
    """{"a.b": v} as {"a": {"b": v}} (tuples as lists)."""
    node: Any = list(value) if isinstance(value, tuple) else value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def to_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return the path."""
    return write_text(path, to_yaml(config))
