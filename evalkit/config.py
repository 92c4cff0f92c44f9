"""EvalConfig: every setting of an evaluation, from a YAML/TOML file and/or CLI flags.

Config keys are the long CLI flag names with ``_`` (``sum_tol``) or ``-`` (``sum-tol``);
see ``configs/README.md`` for the documented list. Unknown keys are errors that name the
key, the file and the closest known key, so a typo never silently changes a nightly job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, closest
from .loss import DEFAULT_EPS


@dataclass
class EvalConfig:
    """All settings of one evaluation (library defaults; every field is optional)."""

    input: list[str] = field(default_factory=list)
    """Prediction input(s): Parquet file, directory (hive partitions), glob or URL."""
    labels: str | None = None
    """Separate labels input joined on ``on``."""
    on: list[str] = field(default_factory=list)
    """Join key column(s) for ``labels``."""
    predictions: list[str] = field(default_factory=list)
    """Prediction column(s): several class columns, one list column, or one binary P(class 1)."""
    prefix: str | None = None
    """Prefix of wide prediction columns (class names are the suffixes)."""
    logits: bool | None = None
    """Predictions are raw logits (None: detect from column names)."""
    label: str | None = None
    """Label column (int index, class name, or list of soft targets)."""
    targets: list[str] = field(default_factory=list)
    """One-hot / soft target columns, one per class."""
    target_prefix: str | None = None
    classes: list[str] = field(default_factory=list)
    """Class names, in class-index order (for list layouts and string labels)."""
    keys: list[str] | None = None
    """Row key column(s) carried into per-row output (None: detect ``id``)."""
    by: list[list[str]] = field(default_factory=list)
    """Extra groupings; each is a list of columns (``[split, region]`` = the combination)."""
    by_class: bool = True
    by_split: bool = True
    """Group by a ``split`` column automatically when the input has one."""
    weight: str | None = None
    eps: float = DEFAULT_EPS
    sum_tol: float = 1e-3
    renormalize: bool = False
    on_invalid: str = "error"
    """``error`` (default) or ``skip`` (drop invalid rows, counted per reason)."""
    unmatched: str = "error"
    """``error`` (default) or ``drop`` for keys without a match in a join."""
    quantiles: str = "auto"
    """``auto``, ``exact`` or ``sketch``."""
    exact_limit: int = 1_000_000
    top_k: int = 10
    batch_size: int | None = None
    out: str | None = None
    overwrite: bool = False
    write_rows: bool = True
    plots: bool = True
    """Write PNG plots next to report.md (needs the ``plot`` extra: matplotlib)."""
    engine: str = "local"
    scheduler: str | None = None
    gates: dict[str, Any] = field(default_factory=dict)
    """Quality gates (see ``evalkit.gates``)."""
    compare: dict[str, Any] = field(default_factory=dict)
    """Settings of ``evalkit compare``: seed, n_boot, confidence, allow_mismatch, pair_on, boot_limit."""
    history: dict[str, Any] = field(default_factory=dict)
    """Settings of ``evalkit history``: window, lookback, alpha, min_change_pct, min_before,
    max_rows, confidence (see :mod:`evalkit.trend`)."""
    source_file: str | None = field(default=None, compare=False)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        """The config keys."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "source_file"]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EvalConfig:
        """Load a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
        data: Any
        if p.suffix == ".toml":
            import tomllib

            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{p}: config file does not parse: {exc}") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                # One line: where (line / column of the file) and what, not PyYAML's dump.
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
                raise ConfigError(f"{p}: config file does not parse{where}: {problem}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: config file must hold a mapping of keys, got {type(data).__name__}")
        cfg = cls.from_mapping(data, source=str(p))
        cfg.source_file = str(p)
        # Relative input / output paths are relative to where the command runs, like flags.
        return cfg

    @classmethod
    def coerce(cls, config: EvalConfig | str | os.PathLike[str] | Mapping[str, Any] | None) -> EvalConfig:
        """A fresh config from None (defaults), a config (copied), a mapping or a file path."""
        if config is None:
            return cls()
        if isinstance(config, EvalConfig):
            import copy

            return copy.deepcopy(config)
        if isinstance(config, Mapping):
            return cls.from_mapping(config)
        return cls.from_file(config)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "config") -> EvalConfig:
        """Build from a mapping, checking keys and value types."""
        cfg = cls()
        cfg.update(data, source=source)
        return cfg

    def update(self, data: Mapping[str, Any], source: str = "flags") -> EvalConfig:
        """Override fields from a mapping (None values are ignored)."""
        known = {f.name: f for f in dataclasses.fields(self) if f.name != "source_file"}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key == "output":
                key = "out"
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown config key {raw_key!r}{closest(key, known)}; "
                    f"known keys: {', '.join(sorted(known))}"
                )
            if value is None:
                continue
            setattr(self, key, _coerce(key, value, source))
        self.validate(source)
        return self

    def validate(self, source: str = "config") -> None:
        """Check enumerated values and ranges."""
        from .loss import check_eps

        choices = {
            "on_invalid": ("error", "skip"),
            "unmatched": ("error", "drop"),
            "quantiles": ("auto", "exact", "sketch"),
            "engine": ("local", "dask"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"{source}: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}"
                )
        try:
            check_eps(self.eps)
        except Exception as exc:  # noqa: BLE001 - re-raised as a config error naming the source
            raise ConfigError(f"{source}: {exc}") from None
        if not (0 < self.sum_tol < 1):
            raise ConfigError(f"{source}: sum_tol must be in (0, 1), got {self.sum_tol!r}")
        if self.top_k < 0:
            raise ConfigError(f"{source}: top_k must be >= 0, got {self.top_k}")
        from .aggregate.topk import MAX_TOP_K

        if self.top_k > MAX_TOP_K:
            raise ConfigError(
                f"{source}: top_k {self.top_k:,} is above the limit of {MAX_TOP_K:,} hardest rows "
                "per group (they are kept in memory, overall and per class); every row's loss "
                "is in rows.parquet: sort that for more")
        if self.gates:
            from .gates import validate_gates

            validate_gates(self.gates, f"{source}: gates")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"{source}: batch_size must be >= 1, got {self.batch_size}")

    # -- provenance -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (JSON-serialisable)."""
        d = dataclasses.asdict(self)
        d.pop("source_file", None)
        return d

    def digest(self) -> str:
        """A short hash of the settings, for provenance."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_LIST_KEYS = {"input", "on", "predictions", "targets", "classes"}
_BOOL_KEYS = {"by_class", "by_split", "renormalize", "overwrite", "write_rows", "plots"}
_FLOAT_KEYS = {"eps", "sum_tol"}
_INT_KEYS = {"exact_limit", "top_k"}


def _coerce(key: str, value: Any, source: str) -> Any:
    def bad(kind: str) -> ConfigError:
        return ConfigError(f"{source}: key {key!r} must be {kind}, got {value!r}")

    if key in _LIST_KEYS or key == "keys":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()] if key != "input" else [value]
        if isinstance(value, Sequence):
            return [str(v) for v in value]
        raise bad("a list of strings")
    if key == "by":
        return parse_groupings(value, source)
    if key in _BOOL_KEYS or key == "logits":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad("true or false")
    if key in _FLOAT_KEYS:
        # YAML 1.1 reads "1e-7" (no dot) as a string: accept it as a number.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if key in _INT_KEYS or key == "batch_size":
        if isinstance(value, bool):
            raise bad("a whole number")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise bad("a whole number") from None
        if f != int(f):
            raise bad("a whole number")
        return int(f)
    if key in ("gates", "compare", "history"):
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return dict(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def parse_groupings(value: Any, source: str = "config") -> list[list[str]]:
    """``"split,region"`` -> ``[["split", "region"]]``; a list mixes names and lists."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence):
        raise ConfigError(f"{source}: 'by' must be a list of column names or lists, got {value!r}")
    out: list[list[str]] = []
    for item in items:
        if isinstance(item, str):
            cols = [c.strip() for c in item.split(",") if c.strip()]
        elif isinstance(item, Sequence):
            cols = [str(c) for c in item]
        else:
            raise ConfigError(f"{source}: bad grouping {item!r} in 'by'")
        if not cols:
            raise ConfigError(f"{source}: empty grouping in 'by'")
        if cols not in out:
            out.append(cols)
    return out
