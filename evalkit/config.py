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

from .errors import ConfigError, check_one_spelling, closest, option
from .loss import DEFAULT_EPS


@dataclass
class EvalConfig:
    """All settings of one evaluation (library defaults; every field is optional).

    Each field is a config-file key (YAML / TOML: ``sum_tol`` or ``sum-tol``), a keyword of
    :func:`evalkit.evaluate` and a CLI flag (``--sum-tol``); ``configs/README.md`` lists them.
    ``eps`` is the clip of the loss ``-log(clip(p_true, eps, 1 - eps))`` in nats (see
    :func:`evalkit.cross_entropy`).

    Raises
    ------
    ConfigError
        From :meth:`from_file` / :meth:`from_mapping`: an unknown key, a value of the wrong
        type or outside its range (exit code 2 at the CLI).
    """

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
    ignore_label: str | int | None = None
    """Label value whose rows are left out of every statistic and counted apart (PyTorch's
    ``ignore_index``, Keras' ``ignore_class``; typically -100 or -1)."""
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
    confidence: float = 0.95
    """Confidence level of the intervals (``sem``, ``ci_low``, ``ci_high``) in every table."""
    ci: str = "t"
    """``t``: t-interval from the moments; ``bootstrap``: streaming Poisson bootstrap."""
    bootstrap_samples: int = 100
    bootstrap_seed: int = 0
    calibration_bins: int = 15
    """Equal-width confidence bins of the calibration statistics (ECE, MCE, reliability)."""
    slices: list[str] = field(default_factory=list)
    """Columns whose values and combinations are searched for significantly worse slices."""
    slice_depth: int = 2
    slice_min_count: int = 30
    slice_fdr: float = 0.05
    """Benjamini-Hochberg false discovery rate over all slices tested."""
    slice_limit: int = 10_000
    """Most distinct slices per column combination; bigger combinations are skipped (noted)."""
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
    paths_from_file: dict[str, str] = field(default_factory=dict, compare=False)
    """Path keys (``input``, ``labels``, ``out``) whose value was read from a config file, and
    that file: such a path is relative to the current directory, as a flag's is, and an
    input not found there is named with the file and the directory
    (:func:`relative_path_error`). A key set again by flags or arguments is dropped."""
    gates_empty_in: str | None = field(default=None, compare=False)
    """Where an empty ``gates:`` key was read (a file, ``config``), else None: no key of the
    config (not in :meth:`to_dict` / :meth:`digest`); each command notes it like a block
    holding none of its gates (:func:`evalkit.gates.gates_note`)."""
    file_keys: tuple[str, ...] = field(default=(), compare=False)
    """The keys the config file set (:meth:`from_file`), as field names."""
    notes: list[str] = field(default_factory=list, compare=False)
    """Notes on how the settings were resolved (an environment variable that overrides a
    key of the config file): run warnings of the command (stderr, report.md, summary.json)."""

    # -- construction -----------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        """The config keys."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EvalConfig:
        """Load a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            from .io import current_dir_gone, cwd_gone_error

            if isinstance(exc, FileNotFoundError) and not p.is_absolute() and current_dir_gone():
                raise cwd_gone_error(p) from None
            raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
        data: Any
        if p.suffix == ".toml":
            import tomllib

            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{p}: config file does not parse: {exc}") from None
        else:
            data = load_yaml(text, str(p))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: config file must hold a mapping of keys, got {type(data).__name__}")
        cfg = cls.from_mapping(data, source=str(p))
        cfg.source_file = str(p)
        cfg.file_keys = tuple(config_key(k) for k in data)
        # Relative input / output paths are relative to where the command runs, like flags
        # (not to the file's directory: configs of earlier versions rely on it).
        cfg.paths_from_file = {key: str(p) for key in sorted(_PATH_KEYS) if getattr(cfg, key)}
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
        known = {f.name: f for f in dataclasses.fields(self) if f.name not in _NOT_KEYS}
        check_one_spelling(data, source, config_key)
        for raw_key, value in data.items():
            key = config_key(raw_key)
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown config key {raw_key!r}{closest(key, known)}; "
                    f"known keys: {', '.join(sorted(known))}"
                )
            if key == "gates" and source != "flags":
                # an empty key (every gate commented out) checks nothing, as no key, but each
                # command says so in its output, JSON and report: never silent; a usage error
                # would stop the night's reports for what may be meant
                self.gates_empty_in = source if value is None or value == {} else None
            if value is None:
                continue
            setattr(self, key, _coerce(key, value, source))
            self.paths_from_file.pop(key, None)
        self.validate(source)
        return self

    def validate(self, source: str = "config") -> None:
        """Check enumerated values and ranges."""
        from .loss import check_eps, check_sum_tol

        choices = {
            "on_invalid": ("error", "skip"),
            "unmatched": ("error", "drop"),
            "quantiles": ("auto", "exact", "sketch"),
            "engine": ("local", "dask"),
            "ci": ("t", "bootstrap"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"{source}: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}"
                )
        try:
            check_eps(self.eps)
            check_sum_tol(self.sum_tol)
        except Exception as exc:  # noqa: BLE001 - re-raised as a config error naming the source
            raise ConfigError(f"{source}: {exc}") from None
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
        if not 0 < self.confidence < 1:
            raise ConfigError(f"{source}: confidence must be in (0, 1), got {self.confidence!r}")
        if not 0 < self.slice_fdr < 1:
            raise ConfigError(f"{source}: slice_fdr must be in (0, 1), got {self.slice_fdr!r}")
        if self.slice_depth not in (1, 2, 3):
            raise ConfigError(f"{source}: slice_depth must be 1, 2 or 3, got {self.slice_depth!r}")
        for key, low in (("calibration_bins", 1), ("bootstrap_samples", 2), ("slice_min_count", 2),
                         ("slice_limit", 1), ("bootstrap_seed", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"{source}: {key} must be >= {low}, got {getattr(self, key)!r}")
        for key, high in SIZE_LIMITS.items():
            if getattr(self, key) > high:
                raise ConfigError(f"{source}: {key} must be <= {high:,} (the documented limit that bounds "
                                  f"time and memory), got {getattr(self, key)!r}")
        from .aggregate.slices import MAX_SLICE_COLUMNS

        if len(self.slices) > MAX_SLICE_COLUMNS:
            raise ConfigError(f"{source}: at most {MAX_SLICE_COLUMNS} slice columns, got "
                              f"{len(self.slices)} ({', '.join(self.slices)})")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"{source}: batch_size must be >= 1, got {self.batch_size}")
        check_column_lists(self, source)

    # -- provenance -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (JSON-serialisable)."""
        d = dataclasses.asdict(self)
        for key in _NOT_KEYS:
            d.pop(key, None)
        return d

    def digest(self) -> str:
        """A short hash of the settings, for provenance."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: Fields of :class:`EvalConfig` that are no config key: where it was read from.
#: Other spellings of config keys: each key may be spelled as its long flag (``key: id`` as
#: ``--key id``; ``rows: false`` as ``--no-rows``), and ``output`` as ``out``.
KEY_ALIASES = {"output": "out", "key": "keys", "rows": "write_rows"}


def config_key(raw: Any) -> str:
    """The field name a config key names: ``-`` read as ``_`` (``sum-tol``), aliases
    (:data:`KEY_ALIASES`) resolved."""
    key = str(raw).replace("-", "_")
    return KEY_ALIASES.get(key, key)


_NOT_KEYS = ("source_file", "gates_empty_in", "file_keys", "notes", "paths_from_file")
_LIST_KEYS = {"input", "on", "predictions", "targets", "classes", "slices"}
_PATH_KEYS = {"input", "labels", "out"}
_BOOL_KEYS = {"by_class", "by_split", "renormalize", "overwrite", "write_rows", "plots"}
_FLOAT_KEYS = {"eps", "sum_tol", "confidence", "slice_fdr"}
SIZE_LIMITS = {"bootstrap_samples": 10_000, "calibration_bins": 1_000, "slice_limit": 1_000_000}
"""Largest accepted value of each size-like statistics option (slice_depth is 1-3, slice columns
at most ``MAX_SLICE_COLUMNS``): time and memory grow linearly with each (bootstrap: rows x samples
per batch), so a typo such as ``bootstrap_samples: 1000000`` is a ConfigError, not an OOM kill."""

_INT_KEYS = {"exact_limit", "top_k", "bootstrap_samples", "bootstrap_seed", "calibration_bins",
             "slice_depth", "slice_min_count", "slice_limit"}
#: Types of the ``compare`` settings (``evalkit compare``) and the least value of the counts.
COMPARE_TYPES = {"seed": ("int", 0), "n_boot": ("int", 100), "confidence": ("float", None),
                 "allow_mismatch": ("bool", None), "pair_on": ("list", None),
                 "boot_limit": ("int", 1)}


#: The settings that list columns, each read once per class / key / slice: a column named
#: twice would be two classes reading one column (with ``renormalize`` a wrong loss, exit 0),
#: or two key parts that are one.
COLUMN_LISTS = ("predictions", "targets", "on", "keys", "slices")


def check_column_lists(cfg: EvalConfig, source: str) -> None:
    """Raise ConfigError (exit 2) when a setting listing columns (:data:`COLUMN_LISTS`) names
    one column twice, naming the column and the setting; the one home of the rule for the
    command line, config files and Python alike (a grouping's columns: :func:`parse_groupings`;
    ``compare.pair_on``: :func:`check_compare_settings`)."""
    for key in COLUMN_LISTS:
        _refuse_twice(getattr(cfg, key) or [], option(key, list(getattr(cfg, key) or [])), source)


def _refuse_twice(cols: Sequence[str], setting: str, source: str) -> None:
    twice = next((c for i, c in enumerate(cols) if c in cols[:i]), None)
    if twice is not None:
        raise ConfigError(f"{source}: column {twice!r} is named twice in {setting}; list each column once")


def check_slice_columns(items: Sequence[str], value: Any, source: str) -> None:
    """Raise ConfigError (exit 2) when the ``slices`` setting is text that names no column
    (``--slices ''``, ``--slices ,``, ``slices: ""``: an empty shell variable must not turn
    the slice search off unnoticed), names an empty column, or names a column holding a comma
    (a slice's columns are listed comma-joined in ``slices.parquet``). An empty list
    (``slices: []``) is the default, no slice search, as for every other list setting, so
    ``EvalConfig.from_mapping(config.to_dict())`` round-trips. The message says what to
    write, for the command line, Python or the config file."""
    from .errors import option

    in_file = source.endswith((".yaml", ".yml", ".toml"))
    example = "`slices: [region, device]`" if in_file else option("slices", ["region", "device"])
    leave_out = "leave the `slices` key out" if in_file else f"leave out {option('slices')}"
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
        return
    if not items or any(not v.strip() for v in items):
        raise ConfigError(f"{source}: slices names no column ({value!r}): give the column(s) to "
                          f"search, e.g. {example}; to run without the slice search, {leave_out}")
    bad = [v for v in items if "," in v]
    if bad:
        raise ConfigError(f"{source}: slice column {bad[0]!r} holds a comma: slices.parquet lists a "
                          "slice's columns joined by commas, so rename the column first")


def strict_bool(key: str, value: Any, source: str) -> bool:
    """``value`` if it is a boolean, else ConfigError naming ``key`` (``"false"`` is not false)."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{source}: key {key!r} must be true or false, got {value!r}")


def strict_number(key: str, value: Any, source: str) -> float:
    """A finite number (not a string, not a boolean), else ConfigError naming ``key``."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{source}: key {key!r} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ConfigError(f"{source}: key {key!r} must be a finite number, got {value!r}")
    return f


def strict_count(key: str, value: Any, source: str, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (an integral float such as ``1e6`` is fine; strings,
    booleans, NaN, infinities and fractions are not), else ConfigError naming ``key``."""
    f = strict_number(key, value, source)
    if f != int(f):
        raise ConfigError(f"{source}: key {key!r} must be a whole number, got {value!r}")
    if f < minimum:
        raise ConfigError(f"{source}: key {key!r} must be >= {minimum}, got {value!r}")
    return int(f)


def check_compare_settings(settings: Mapping[str, Any], source: str = "compare") -> dict[str, Any]:
    """The ``compare`` settings, typed strictly (ConfigError naming the key otherwise)."""
    check_one_spelling(settings, source)
    out: dict[str, Any] = {}
    for raw, value in settings.items():
        key = str(raw).replace("-", "_")
        if key not in COMPARE_TYPES:
            raise ConfigError(f"{source}: unknown compare setting {raw!r}{closest(key, COMPARE_TYPES)}; "
                              f"known: {', '.join(COMPARE_TYPES)}")
        if value is None:
            continue
        kind, least = COMPARE_TYPES[key]
        name = f"compare.{key}"
        if kind == "bool":
            out[key] = strict_bool(name, value, source)
        elif kind == "int":
            out[key] = strict_count(name, value, source, least or 0)
        elif kind == "float":
            f = strict_number(name, value, source)
            if not 0 < f < 1:
                raise ConfigError(f"{source}: key {name!r} must be in (0, 1), got {value!r}")
            out[key] = f
        else:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: key {name!r} must be a list of column names, got {value!r}")
            _refuse_twice(list(value), option(key, list(value)), source)
            out[key] = list(value)
    return out


def relative_path_error(exc: Exception, cfg: EvalConfig) -> Exception:
    """``exc`` (an input path not found: :class:`~evalkit.errors.EmptyInputError` carrying
    ``path``) restated for a relative path read from a config file: which key, which file,
    and the directory it was looked for in. Any other error is returned as it is.

    >>> from evalkit.errors import EmptyInputError
    >>> cfg = EvalConfig(input=["data/preds"], paths_from_file={"input": "configs/c.yaml"})
    >>> err = EmptyInputError("data/preds: no such file or directory"); err.path = "data/preds"
    >>> str(relative_path_error(err, cfg)).startswith("input data/preds (from configs/c.yaml, relative to")
    True
    """
    path = getattr(exc, "path", None)
    if path is None or os.path.isabs(path):
        return exc
    for key, file in cfg.paths_from_file.items():
        given = getattr(cfg, key)
        values = given if isinstance(given, list) else [given]
        if path not in [os.fspath(v).removeprefix("file://") for v in values if v is not None]:
            continue
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "(which no longer exists)"
        what = str(exc)[len(path) + 2:] if str(exc).startswith(f"{path}: ") else str(exc)
        err = type(exc)(
            f"{key} {path} (from {file}, relative to the current directory {cwd}): {what}; paths in a "
            "config file are relative to the directory the command runs in, as on the command line: "
            "run it from the directory they are relative to (cd), or write absolute paths")
        err.path = path  # type: ignore[attr-defined]
        return err
    return exc


def _coerce(key: str, value: Any, source: str) -> Any:
    def bad(kind: str) -> ConfigError:
        return ConfigError(f"{source}: key {key!r} must be {kind}, got {value!r}")

    if key in _PATH_KEYS:
        # A path may be a str or any os.PathLike (pathlib.Path), as everywhere in the API.
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif key == "input" and isinstance(value, Sequence) and not isinstance(value, str):
            value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        if isinstance(value, bytes) or (key == "input" and isinstance(value, Sequence)
                                        and any(isinstance(v, bytes) for v in value)):
            raise bad("a path (str or pathlib.Path)")
    if key in _LIST_KEYS or key == "keys":
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()] if key != "input" else [value]
        elif isinstance(value, Sequence) and all(isinstance(v, str | int) and not isinstance(v, bool)
                                                 for v in value):
            items = [str(v) for v in value]
        else:
            raise bad("a list of strings")
        if key == "slices":
            check_slice_columns(items, value, source)
        return items
    if key == "by":
        return parse_groupings(value, source)
    if key in _BOOL_KEYS or key == "logits":
        return strict_bool(key, value, source)
    if key in _FLOAT_KEYS:
        return strict_number(key, value, source)
    if key in _INT_KEYS or key == "batch_size":
        return strict_count(key, value, source, 1 if key == "batch_size" else 0)
    if key == "ignore_label":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad("a label value (a number or a class name)")
        return value
    if key in ("gates", "compare", "history"):
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        if key != "gates" and "gates" in value:
            # A gates block inside a command's section would be read by no command (evaluate
            # and compare never look in 'history:'): one top-level 'gates:' serves all three.
            raise ConfigError(f"{source}: '{key}' holds a 'gates' block; gates are not a setting of "
                              f"{key}: put them in the top-level 'gates:' section, which evaluate, "
                              "compare and history share (each checks the gates that apply to it)")
        if key == "compare":
            check_compare_settings(value, source)
        if key == "history":  # its keys are checked by history; one key in two spellings here
            check_one_spelling(value, f"{source}: history")
        if key == "gates" and isinstance(value.get("groups"), Mapping):
            # named as the run names them (the groupings' check reads the names)
            from .gates import gated_groupings

            value = {**value, "groups": gated_groupings(value["groups"], f"{source}: gates")}
        # the gates' spellings, values ... are normalised and checked by validate()
        return dict(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


# -- YAML, strictly ------------------------------------------------------------------------

#: A config file may describe at most this many values once YAML aliases are expanded: a
#: few hundred bytes of nested anchors ("billion laughs") would otherwise expand to
#: billions, and any later walk over the data (hashing the config) would run for minutes.
MAX_YAML_VALUES = 100_000


def load_yaml(text: str, source: str) -> Any:
    """Parse a YAML config strictly: YAML 1.2 numbers (``1e-7`` is a number, not a string),
    duplicated keys are errors, and alias expansion is bounded (:data:`MAX_YAML_VALUES`).
    Raises ConfigError with the line and column of the problem."""
    import yaml

    loader = _strict_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        # One line: where (line / column of the file) and what, not PyYAML's dump.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise ConfigError(f"{source}: config file does not parse{where}: {problem}") from None
    finally:
        loader.dispose()


def _check_expanded_size(root: Any, source: str) -> None:
    """Count the values ``root`` stands for with every alias expanded, in time linear in the
    number of distinct nodes (sizes of shared nodes are memoised); stop past the limit."""
    import yaml

    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            active.discard(nid)
            if isinstance(node, yaml.MappingNode):
                children = [c for pair in node.value for c in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_YAML_VALUES:
                mark = node.start_mark
                raise ConfigError(
                    f"{source}: config file expands to more than {MAX_YAML_VALUES:,} values "
                    f"(YAML anchors and aliases, from line {mark.line + 1}); refusing to load it")
            size[nid] = total
            continue
        if nid in size:
            continue
        if nid in active:
            raise ConfigError(f"{source}: config file holds a recursive YAML alias "
                              f"(line {node.start_mark.line + 1})")
        active.add(nid)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((c, False) for pair in node.value for c in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((c, False) for c in node.value)


_LOADER: Any = None


def _strict_loader() -> Any:
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import re

    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    if (key_node.tag == "tag:yaml.org,2002:bool" and not key_node.style
                            and key_node.value.lower() not in ("true", "false")):
                        # YAML 1.1 reads the key `on:` (and yes / no / off) as a boolean: a
                        # config key is a name (``on: [id]`` is the join key), as in YAML 1.2
                        key_node.tag = "tag:yaml.org,2002:str"
                    key = self.construct_object(key_node, deep=True)
                    try:
                        dup = key in seen
                        seen.add(key)
                    except TypeError:
                        continue  # unhashable keys are reported by PyYAML itself
                    if dup:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicated key {key!r}", key_node.start_mark)
            return super().construct_mapping(node, deep)

    # YAML 1.2 floats: 1e-7 and 1E6 are numbers (YAML 1.1, PyYAML's default, needs a dot).
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    _LOADER = StrictLoader
    return StrictLoader


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
            comma = next((c for c in cols if "," in c), None)
            if comma is not None:  # by_* file and history name the grouping "x,y" (= x and y)
                raise ConfigError(
                    f"{source}: group column {comma!r} holds a comma: a grouping is named by its columns "
                    f"joined with commas, so it could not be told from the grouping of the columns "
                    f"{', '.join(repr(c) for c in comma.split(','))}; rename the column first "
                    f"(df.rename(columns={{{comma!r}: {comma.replace(',', '_')!r}}}))")
        else:
            raise ConfigError(f"{source}: bad grouping {item!r} in 'by'")
        if not cols:
            raise ConfigError(f"{source}: empty grouping in 'by'")
        twice = sorted({c for c in cols if cols.count(c) > 1})
        if twice:
            raise ConfigError(f"{source}: grouping {','.join(cols)!r} in 'by' names column {twice[0]!r} "
                              "twice; a grouping lists each column once")
        if cols not in out:
            out.append(cols)
    return out

