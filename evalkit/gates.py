"""Quality gates: limits a nightly job checks after the report is written.

One ``gates`` mapping (config key ``gates``) serves ``evaluate`` and ``compare``::

    gates:
      # evaluate gates: checked on the run (by ``compare``: on the candidate)
      max_mean_loss: 0.5            # overall mean loss
      max_clipped_fraction: 0.01    # overall share of rows clipped low (p_true < eps)
      min_accuracy: 0.8             # overall accuracy
      require_ci_above_limit: true  # max_mean_loss fails only if the whole CI is above the limit
      # compare gates: checked on every group of every grouping (overall included)
      max_regression: 0.02          # delta of mean loss (candidate - baseline) above this fails
      max_regression_pct: 5         # relative delta in percent (or max_regression: "5%")
      require_ci_excludes_zero: true  # a regression fails only if its CI lies above zero
      min_count: 100                # groups smaller than this are reported but not gated
      # history gates: checked by ``history`` on every group of every grouping
      max_drift: 0.05               # latest mean - mean ``lookback`` runs earlier above this fails
      max_drift_pct: 10             # the same in percent (or max_drift: "10%")
      max_change_pct: 0             # a detected shift up (worse) of more than this percent fails
      fail_unchecked: false         # compare, history: a gate that cannot be checked fails (default: noted)
      groups:                       # per grouping: these keys override / add to the above
        class: {max_mean_loss: 1.2, max_regression: 0.05}
        region: {min_count: 500}

Top-level evaluate gates apply to the overall line; under ``groups:`` they apply to every
group of that grouping. Top-level compare gates apply to every grouping; a grouping's
entry under ``groups:`` overrides them. A gate fails when the observed value is strictly
beyond the limit (``observed > limit`` for ``max_*``, ``<`` for ``min_*``): a value equal
to the limit passes, and so does one within 1e-9 of it relative (:data:`LIMIT_RTOL`: the
last bits of a streamed mean are not a regression). ``min_count`` of a compare gate is the smaller of the two runs' counts.

Each failure reads ``<gate> <grouping>[<group>]: observed X > limit Y`` (plus details).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from .errors import ConfigError

EVAL_GATES = ("max_mean_loss", "max_clipped_fraction", "min_accuracy")
COMPARE_GATES = ("max_regression", "max_regression_pct")
HISTORY_GATES = ("max_drift", "max_drift_pct", "max_change_pct")
GATE_OPTIONS = ("min_count", "require_ci_excludes_zero", "require_ci_above_limit", "fail_unchecked")
GATE_KEYS = set(EVAL_GATES) | set(COMPARE_GATES) | set(HISTORY_GATES) | set(GATE_OPTIONS) | {"groups"}
#: Settings of a command's own config section that are not gates (``window: 10`` written under
#: ``gates:``): an unknown gate key among them says where it belongs. (Kept equal to
#: ``trend.DEFAULTS`` and ``config.COMPARE_TYPES`` by tests/test_gates.py.)
SETTINGS_ELSEWHERE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("window", "lookback", "alpha", "min_change_pct", "min_before", "max_rows", "reuse"),
                    ("history",)),
    **dict.fromkeys(("seed", "n_boot", "allow_mismatch", "pair_on", "boot_limit"), ("compare",)),
    "confidence": ("history", "compare"),
}


@dataclass(frozen=True)
class GateFailure:
    """One failed gate; ``str()`` is the one-line summary."""

    gate: str
    grouping: str
    group: str
    observed: float
    limit: float
    detail: str = ""
    failed: bool = True  # False: the gate could not be checked, and that was only noted
    #: the group's key columns and typed values (a missing key is None), as summary.json's
    #: group records hold them; None for a gate on the overall line or a whole grouping.
    #: ``group`` is the key's label as every report shows it (:func:`~evalkit.escape.key_label`).
    key: tuple[tuple[str, Any], ...] | None = None

    def __str__(self) -> str:
        where = self.grouping if not self.group else f"{self.grouping}[{self.group}]"
        if not self.failed:  # printed after "gate not checked: "
            return f"{self.gate} {where}: {self.detail}"
        if self.observed != self.observed:  # NaN: there was nothing the gate could check
            return f"{self.gate} {where}: could not be checked ({self.detail})"
        op = ">" if self.gate.startswith("max") else "<"
        unit = "%" if self.gate.endswith("_pct") else ""
        obs, lim = distinct_numbers(self.observed, self.limit)
        text = f"{self.gate} {where}: observed {obs}{unit} {op} limit {lim}{unit}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, Any]:
        """One entry of a JSON ``gates.failures`` / ``gates.not_checked`` list (summary.json,
        compare.json, history.json alike); ``message`` is the one-line ``str()``."""
        return {"gate": self.gate, "grouping": self.grouping, "group": self.group,
                "key": None if self.key is None else dict(self.key),
                "observed": None if self.observed != self.observed else self.observed,
                "limit": self.limit, "detail": self.detail, "message": str(self)}


def group_key(row: Mapping[str, Any], cols: Sequence[str]) -> tuple[str, tuple[tuple[str, Any], ...] | None]:
    """The ``group`` and ``key`` of a :class:`GateFailure` on the table row ``row`` of a
    grouping with key columns ``cols``: the label the reports show (``grp[""]``, ``grp[∅]``,
    a string ``"nan"`` as ``grp[nan]``) and the typed key values (a missing key as None)."""
    from .escape import is_missing, key_label

    values = [row[c] for c in cols]
    plain = [None if is_missing(v) else v.item() if isinstance(v, np.generic) else v for v in values]
    return key_label(values), (tuple(zip(cols, plain, strict=True)) if cols else None)


def distinct_numbers(observed: float, limit: float) -> tuple[str, str]:
    """``observed`` and ``limit`` as text with 6 significant digits, or as many more (up to
    17, exact for float64) as it takes for two different numbers to read differently: a
    gate message never says ``17.5272% > 17.5272%``. The one formatting of gate numbers."""
    for digits in range(6, 18):
        a, b = f"{observed:.{digits}g}", f"{limit:.{digits}g}"
        if a != b or observed == limit:
            return a, b
    return a, b


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: gate {key!r} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{source}: gate {key!r} must be finite, got {value!r}")
    return float(value)


#: Gates given under one written key as a number or a percentage (``max_drift: 0.05``,
#: ``max_drift: "10%"`` = ``max_drift_pct: 10``): under ``groups:``, a grouping's key as written
#: overrides the top level's key as written, whichever form each has (:func:`normalize_gates`).
PERCENT_KEYS = ("max_regression", "max_drift")


def normalize_gates(gates: Mapping[str, Any] | None, source: str = "gates") -> dict[str, Any]:
    """A copy in the one form every check reads: keys spelled with ``_`` (``max-drift`` is
    ``max_drift``, as for every config key), ``max_regression: "5%"`` rewritten as
    ``max_regression_pct: 5``, grouping names under ``groups:`` as ``--by`` writes them
    (``"split , region"`` is ``split,region``), and ``groups:`` or a grouping whose entries are
    all commented out (YAML null) empty: they check nothing, as an empty ``gates:`` does.

    Raises ConfigError (naming ``source``) when a mapping gives one key in two spellings
    (``max-drift`` and ``max_drift``), one gate in both forms (``max_drift: "10%"`` and
    ``max_drift_pct: 200``) or one grouping under two names, or a percentage that is no
    finite number."""
    from .errors import check_one_spelling

    gates = gates or {}
    check_one_spelling(gates, source)
    raw = {k.replace("-", "_") if isinstance(k, str) else k: v for k, v in gates.items()}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "groups" and (value is None or isinstance(value, Mapping)):
            out[key] = {name: _grouping_block(raw, sub, f"{source}.groups.{name}")
                        if sub is None or isinstance(sub, Mapping) else sub
                        for name, sub in gated_groupings(value or {}, source).items()}
        elif key in ("max_regression", "max_drift") and isinstance(value, str) and value.strip().endswith("%"):
            if f"{key}_pct" in raw:  # one gate given twice: which limit holds must not depend on key order
                raise ConfigError(f"{source}: {key}: {value!r} and {key}_pct: {raw[f'{key}_pct']!r} set the "
                                  "same gate (a limit in percent); give one of them")
            try:
                pct = float(value.strip()[:-1])
            except ValueError:
                raise ConfigError(f"{source}: {key} must be a number or a percentage like "
                                  f"'5%', got {value!r}") from None
            if not math.isfinite(pct):
                raise ConfigError(f"{source}: gate {key!r} must be finite, got {value!r}")
            out[f"{key}_pct"] = pct + 0.0  # -0% is 0%
        else:
            out[key] = value
    return out


def grouping_name(name: Any) -> Any:
    """A grouping's name as the run names it: its columns joined by ``,`` without the spaces
    around them (``"split , region"`` is ``split,region``), as :func:`evalkit.config.parse_groupings` reads
    ``--by 'split, region'``. Anything but text is left as it is."""
    if not isinstance(name, str):
        return name
    cols = [c.strip() for c in name.split(",") if c.strip()]
    return ",".join(cols) if cols else name


def gated_groupings(groups: Mapping[Any, Any], source: str = "gates") -> dict[Any, Any]:
    """A ``gates: groups:`` mapping keyed by :func:`grouping_name`; ConfigError when two of
    its keys name one grouping (``"split,region"`` and ``"split, region"``)."""
    out: dict[Any, Any] = {}
    written: dict[Any, Any] = {}
    for g, sub in groups.items():
        name = grouping_name(g)
        if name in out:
            raise ConfigError(f"{source}: groups: {written[name]!r} and {g!r} name one grouping "
                              f"({name}); give it once")
        written[name] = g
        out[name] = sub
    return out


def _percent_form(key: str, value: Any) -> str:
    """The gate ``key: value`` is after normalising (``max_drift: "10%"``: ``max_drift_pct``)."""
    return f"{key}_pct" if isinstance(value, str) and value.strip().endswith("%") else key


def _grouping_block(top: Mapping[str, Any], sub: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """A grouping's gates normalised. Where the grouping and the top level (``top``: its keys
    with ``_``) write one of :data:`PERCENT_KEYS` in different forms (``max_drift: 5`` under
    the grouping, ``max_drift: "10%"`` at the top), the top level's form is set to None in the
    grouping's block: not checked for that grouping (rt-final8 F3: the two normalised to two
    gates, and the grouping kept failing the top-level 10%). ``Gates checked`` shows it as null."""
    out = normalize_gates(sub, source)
    raw = {k.replace("-", "_") if isinstance(k, str) else k: v for k, v in (sub or {}).items()}
    for key in PERCENT_KEYS:
        if key in raw and key in top:
            replaced = _percent_form(key, top[key])
            if replaced != _percent_form(key, raw[key]) and replaced not in out:
                out[replaced] = None
    return out


def grouping_gates(top: Mapping[str, Any], sub: Mapping[str, Any] | None,
                   keys: Sequence[str]) -> dict[str, Any]:
    """The gates ``keys`` that apply to one grouping (normalised blocks): the top level's,
    overridden by the grouping's own (``sub``) key by key; a None in the grouping's block (a
    top-level limit its own key as written replaces, :func:`_grouping_block`) removes it."""
    own = {k: v for k, v in (sub or {}).items() if k in keys}
    merged = {**{k: v for k, v in top.items() if k in keys}, **own}
    return {k: v for k, v in merged.items() if v is not None}


def validate_gates(gates: Mapping[str, Any], source: str = "gates", _nested: bool = False) -> None:
    """Reject unknown gate keys and bad values (a typo must not disable a gate silently)."""
    from .errors import closest

    gates = normalize_gates(gates, source)
    for key, value in gates.items():
        if _nested and key == "fail_unchecked":  # read at the top only: accepted here, it did nothing
            raise ConfigError(f"{source}: 'fail_unchecked' applies to every gate of the command: set it "
                              "at the top of gates:, not under a grouping")
        if key not in GATE_KEYS or (_nested and key == "groups"):
            pool = GATE_KEYS - ({"groups"} if _nested else set())
            home = SETTINGS_ELSEWHERE.get(str(key).replace("-", "_"))
            where = (f" ({key!r} is a setting of {' and '.join(home)}, not a gate: put it in the "
                     f"{' or '.join(repr(h + ':') for h in home)} section of the config)"
                     if home else closest(key, pool))
            raise ConfigError(f"{source}: unknown gate {key!r}{where}; "
                              f"known gates: {', '.join(sorted(pool))}")
        if value is None and _nested and _replaced(key, gates):
            continue
        if key == "groups":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: 'groups' must map grouping names to gates")
            for gname, sub in value.items():
                if not isinstance(sub, Mapping):
                    raise ConfigError(f"{source}: gates of grouping {gname!r} must be a mapping")
                validate_gates(sub, f"{source}.groups.{gname}", _nested=True)
        elif key in ("require_ci_excludes_zero", "require_ci_above_limit", "fail_unchecked"):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
        elif key == "min_count":
            v = _number(value, key, source)
            if v < 0 or v != int(v):
                raise ConfigError(f"{source}: 'min_count' must be a whole number >= 0, got {value!r}")
        else:
            v = _number(value, key, source)
            low, high = _RANGES.get(key, (-math.inf, math.inf))
            if not low <= v <= high:
                where = f"in [{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
                hint = f" (a fraction: {v:g}% is {v / 100:g})" if high == 1 and 1 < v <= 100 else ""
                raise ConfigError(f"{source}: gate {key!r} must be {where}, got {value!r}{hint}")


def _replaced(key: Any, block: Mapping[str, Any]) -> bool:
    """Whether ``key: None`` in a grouping's normalised ``block`` is a top-level limit that the
    grouping's own key as written replaces (:func:`_grouping_block`): the other form is set."""
    for k in PERCENT_KEYS:
        if key in (k, f"{k}_pct"):
            other = f"{k}_pct" if key == k else k
            return block.get(other) is not None
    return False


#: The values a gate's limit can take at all: a limit outside can never fail (or never pass),
#: which a typo (a percent typed as 5 for 0.05) must not do silently (rt-eval8 F9).
_RANGES = {"max_clipped_fraction": (0.0, 1.0), "min_accuracy": (0.0, 1.0), "max_mean_loss": (0.0, math.inf)}


#: The commands that check each gate key (options count for the commands whose gates read them).
GATE_COMMANDS: dict[str, tuple[str, ...]] = {
    **{g: ("evaluate", "compare", "history") for g in EVAL_GATES},
    **{g: ("compare",) for g in COMPARE_GATES},
    **{g: ("history",) for g in HISTORY_GATES},
    "min_count": ("evaluate", "compare", "history"),
    "require_ci_above_limit": ("evaluate", "compare", "history"),
    "require_ci_excludes_zero": ("compare", "history"),
    "fail_unchecked": ("evaluate", "compare", "history"),
}


def gates_for(command: str, gates: Mapping[str, Any] | None, *, shared: bool,
              source: str = "gates", warn: bool = True, empty_in: str | None = None) -> dict[str, Any]:
    """The gates ``command`` checks, validated and normalised: the one place each command's
    gates are accepted. ``{}`` when the block holds no gate ``command`` checks: it then
    checks nothing, and says so (:func:`gates_note`, an
    :class:`~evalkit.errors.EvalkitWarning` unless ``warn`` is false), never a silent pass
    reported as "all gates passed".

    ``shared`` gates come from a config's ``gates:`` section, which serves ``evaluate``,
    ``compare`` and ``history`` alike (one nightly file): a key another command checks is
    kept (that command checks it) but not checked here. Gates given to one command
    directly (the ``gates=`` argument of :func:`evalkit.compare` / :func:`evalkit.history`,
    ``evaluate(..., gates=...)``) must all be checked by it: any other key is a
    :class:`~evalkit.errors.ConfigError` (exit 2) naming the key and the command that
    checks it, never a gate silently left unchecked. An unknown key is a ConfigError in
    both cases (:func:`validate_gates`). ``empty_in``: where an empty ``gates:`` key was read
    (``EvalConfig.gates_empty_in``): noted the same way.
    """
    if gates is not None and not isinstance(gates, Mapping):  # one check for the three commands
        raise ConfigError(f"{source}: gates must be a mapping of gate names to limits (e.g. "
                          f"{{'max_mean_loss': 0.5}}), got {type(gates).__name__} {gates!r}")
    gates = normalize_gates(gates, source)
    if not gates:
        if warn and (note := gates_note(command, gates, source, empty_in=empty_in)):
            _warn_note(note)
        return {}
    validate_gates(gates, source)
    if not shared:
        where = [(k, source) for k in gates if k != "groups"]
        where += [(k, f"{source}.groups.{g}") for g, sub in (gates.get("groups") or {}).items() for k in sub]
        for key, at in where:
            owners = GATE_COMMANDS[key]
            if command not in owners:
                raise ConfigError(
                    f"{at}: gate {key!r} is checked by {' and '.join(owners)}, not by {command}: "
                    f"{command} would never check it. Give it to {owners[0]} (or put it in the "
                    f"'gates' of a config file the commands share)")
    note = gates_note(command, gates, source)
    if note is None:
        return gates
    if warn:
        _warn_note(note)
    return {}


def _warn_note(note: str) -> None:
    import warnings

    from .errors import EvalkitWarning

    warnings.warn(EvalkitWarning(note), stacklevel=3)


def gates_note(command: str, gates: Mapping[str, Any] | None, source: str = "gates", *,
               empty_in: str | None = None) -> str | None:
    """The note ``command`` gives when a gates block is present but no gate in it is one
    ``command`` checks, or None (no block, or a gate ``command`` checks is in it). Three
    cases: the block is empty (``gates:`` or ``gates: {}``, read in ``empty_in``: every gate
    commented out), it holds gates only other commands check (named, with the commands that
    check them), or only settings of gates (``min_count``, ``require_ci_*``,
    ``fail_unchecked``) and no limit at all. Each way the command checks nothing, and its
    output (stderr, even under ``-q``), JSON (``gates.note``) and report (``## Gates: none
    checked``) say so. The one wording of that note for the three commands."""
    gates = normalize_gates(gates)
    if not gates:
        return (f"note: {empty_in}: 'gates' is empty, so {command} checks nothing; put gates under it "
                "(configs/README.md) or remove the key") if empty_in else None
    keys = {k for k in gates if k != "groups"} | {k for sub in (gates.get("groups") or {}).values()
                                                  for k in (sub or {})}
    found = sorted(k for k in keys if k not in GATE_OPTIONS)
    if any(command in GATE_COMMANDS[k] for k in found):
        return None
    own = sorted(k for k, owners in GATE_COMMANDS.items() if command in owners and k not in GATE_OPTIONS)
    if not found:
        settings = sorted(k for k in keys if k in GATE_OPTIONS)
        held = f", only settings of gates ({', '.join(settings)})" if settings else ""
        return (f"note: {source} holds no gate{held}, so {command} checks nothing; {command} checks "
                f"{', '.join(own)}")
    return (f"note: {source} holds no gate that {command} checks ({', '.join(found)}: checked by "
            f"{' and '.join(sorted({o for k in found for o in GATE_COMMANDS[k]}))}); {command} checks "
            f"{', '.join(own)}")


#: Failed and not-checked gates listed in a Markdown report, each list (all in the JSON).
MAX_GATE_LINES = 50


def own_gates(command: str, gates: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a (normalised) gates block that ``command`` reads: its gates and the
    settings of them, at the top and per grouping. A shared config's block also holds the
    other commands' gates; a report says what *it* checked."""
    def keep(sub: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sub.items() if command in GATE_COMMANDS.get(k, ())}

    out = keep(gates or {})
    groups = {g: kept for g, sub in ((gates or {}).get("groups") or {}).items() if (kept := keep(sub or {}))}
    return {**out, "groups": groups} if groups else out


def gates_record(command: str, checked: Mapping[str, Any] | None, note: str | None,
                 failures: list[GateFailure], unchecked: list[GateFailure]) -> dict[str, Any]:
    """The one JSON shape of a command's gates: ``summary.json`` ``metadata.gates``,
    ``compare.json`` / ``history.json`` ``gates``. ``checked``: the gates ``command`` read
    (:func:`own_gates`; empty when the block held none, then ``note`` says so);
    ``failures`` / ``not_checked``: :meth:`GateFailure.as_dict` entries."""
    return {"checked": own_gates(command, checked), "note": note, "passed": not failures,
            "failures": [f.as_dict() for f in failures], "not_checked": [f.as_dict() for f in unchecked]}


def gates_markdown(record: Mapping[str, Any] | None, json_name: str) -> list[str]:
    """The ``## Gates`` section of report.md, compare.md and history.md from a
    :func:`gates_record` (the one wording of the three): passed or FAILED with counts, every
    failed and not-checked gate (at most :data:`MAX_GATE_LINES` of each, the rest counted and
    left to ``json_name``), whether not-checked gates fail, and the gates checked. A block
    that checks nothing is "none checked" with its note; no block, no section."""
    from .escape import md_text

    if not record:
        return []
    checked = record.get("checked", record.get("limits")) or {}  # "limits": an older summary.json
    if not checked:
        return ["## Gates: none checked", "", md_text(record["note"]), ""] if record.get("note") else []
    failures, unchecked = record.get("failures") or [], record.get("not_checked") or []
    more = f" ({len(unchecked)} not checked)" if unchecked else ""
    lines = [f"## Gates: FAILED ({len(failures)}){more}" if failures else f"## Gates: passed{more}", ""]
    for mark, items in (("**FAILED**", failures), ("not checked:", unchecked)):
        lines += [f"- {mark} {md_text(_message(f))}" for f in items[:MAX_GATE_LINES]]
        if len(items) > MAX_GATE_LINES:
            lines.append(f"- ... and {len(items) - MAX_GATE_LINES} more ({json_name})")
    if unchecked:
        strict = bool(checked.get("fail_unchecked", False))
        lines.append(f"- (gates that cannot be checked {'fail' if strict else 'do not fail'}: "
                     f"`fail_unchecked: {'true' if strict else 'false'}`)")
    if len(lines) > 2:
        lines.append("")
    text = _yaml(checked).rstrip()
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", text)), default=0))
    return [*lines, "Gates checked:", "", f"{fence}yaml", text, fence, ""]


def _message(entry: Any) -> str:
    return str(entry["message"]) if isinstance(entry, Mapping) else str(entry)


def _yaml(data: Any) -> str:
    import json

    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False)


def _row_value(row: Any, gate: str) -> float:
    if gate == "max_mean_loss":
        # A weighted run: the weighted mean, the figure its interval (ci_low...) is of.
        from .display import row_mean  # display needs pandas; gates is imported without it

        return row_mean(row)
    if gate == "max_clipped_fraction":
        # Confident mistakes only (p_true < eps); reports written before clipped_low existed
        # counted both ends in one ``clipped`` column.
        low = row["clipped_low"] if "clipped_low" in row else row["clipped"]
        return float(low) / float(row["count"]) if row["count"] else 0.0
    return float(row["accuracy"])


#: A value within this relative distance of its limit is equal to it. A mean from streamed
#: sums differs from numpy's two-pass mean in its last bits (0.5500000000000052 for 1,000
#: losses of exactly 0.55), and "a value equal to its limit passes" must not depend on them;
#: 1e-9 is evalkit's accuracy promise, far below any limit a person sets.
LIMIT_RTOL = 1e-9


def beyond(value: float, limit: float, *, below: bool = False) -> bool:
    """``value`` strictly above ``limit`` (``below``: strictly below), by more than
    :data:`LIMIT_RTOL` of the limit; NaN is never beyond."""
    slack = LIMIT_RTOL * abs(limit)
    return bool(value < limit - slack) if below else bool(value > limit + slack)


def _failed(gate: str, value: float, limit: float) -> bool:
    return beyond(value, limit, below=not gate.startswith("max"))


def _key_columns(df: Any) -> list[str]:
    from .disparity import key_columns

    return key_columns(df)


def check_gates(result: Any, gates: Mapping[str, Any] | None, *, detail: str = "",
                unchecked_failed: bool | None = None) -> list[GateFailure]:
    """Evaluate the evaluate-gates of an :class:`~evalkit.api.EvalResult`; return the failures.

    Compare-only keys (``max_regression``...) are ignored here, so one config serves both
    commands. ``result`` needs ``.overall`` (a Series) and ``.groups`` (name -> DataFrame).
    """
    if not gates:
        return []
    validate_gates(gates)
    gates = normalize_gates(gates)
    failures: list[GateFailure] = []
    min_count = int(gates.get("min_count", 0))
    on_ci = bool(gates.get("require_ci_above_limit", False))
    # groups: overall: overrides the top-level gates for the overall line, key by key, as a
    # grouping's keys override them for that grouping (configs/README); never both limits.
    overall_own = (gates.get("groups") or {}).get("overall") or {}
    top = [gate for gate in EVAL_GATES if gate in gates and gate not in overall_own]
    n_overall = float(result.overall["count"]) if top else 0.0
    if top and min_count > 0 and n_overall < min_count:
        # the overall line is a group like any other: one with fewer than min_count rows is
        # reported but not gated (rt-hist7 F5: top-level gates ignored min_count, while the
        # same gates under groups: overall: and compare's / history's gates obeyed it)
        if unchecked_failed is not None:
            failures += [GateFailure(gate, "overall", "", math.nan, float(gates[gate]), _no_group_left(
                min_count, "overall", [n_overall]), failed=unchecked_failed) for gate in top]
        top = []
    for gate in top:
        failure = _eval_gate(gate, result.overall, float(gates[gate]), on_ci, "overall", "", detail,
                             unchecked=unchecked_failed)
        if failure is not None:
            failures.append(failure)
    for gname, sub in (gates.get("groups") or {}).items():
        if not any(g in sub for g in EVAL_GATES):
            continue
        if gname == "overall":
            import pandas as pd

            df = pd.DataFrame([dict(result.overall)])
        elif gname in result.groups:
            df = result.groups[gname]
        else:
            raise ConfigError(f"gates: no grouping {gname!r}; groupings are "
                              f"{', '.join(['overall', *result.groups])}")
        key_cols = _key_columns(df)
        sub_min = int(sub.get("min_count", min_count))
        sub_ci = bool(sub.get("require_ci_above_limit", on_ci))
        if unchecked_failed is not None and len(df) and not (df["count"] >= max(sub_min, 1)).any():
            # (history) a gate whose min_count leaves no group of the grouping checks nothing
            failures += [GateFailure(gate, gname, "", math.nan, float(sub[gate]), _no_group_left(
                sub_min, gname, df["count"]), failed=unchecked_failed) for gate in EVAL_GATES if gate in sub]
        # the key values from records: iterrows would turn an integer key into a float
        keys = df[key_cols].to_dict("records") if key_cols else [{}] * len(df)
        for (_, row), key in zip(df.iterrows(), keys, strict=True):
            if row["count"] < max(sub_min, 1):
                continue
            label, typed = group_key(key, key_cols)
            for gate in EVAL_GATES:
                if gate in sub:
                    failure = _eval_gate(gate, row, float(sub[gate]), sub_ci, gname, label, detail, typed,
                                         unchecked=unchecked_failed)
                    if failure is not None:
                        failures.append(failure)
    return failures


def _no_group_left(min_count: int, grouping: str, counts: Any) -> str:
    """Why a gate whose ``min_count`` excludes every group of a grouping checked nothing."""
    n = np.asarray(counts, dtype=np.int64)
    return (f"min_count {min_count} leaves no group of {grouping!r} to check ({len(n)} group(s), "
            f"the largest with {int(n.max()) if len(n) else 0} rows)")


def _eval_gate(gate: str, row: Any, limit: float, on_ci: bool, grouping: str, label: str,
               detail: str, key: tuple[tuple[str, Any], ...] | None = None,
               unchecked: bool | None = None) -> GateFailure | None:
    """One evaluate gate on one table row. With ``on_ci``, ``max_mean_loss`` fails only when
    the whole confidence interval lies above the limit (``ci_low > limit``). A group without
    an interval (fewer than 2 rows) whose mean is above the limit cannot be decided: with
    ``unchecked`` given it is a not-checked entry (``failed=unchecked``: fail_unchecked
    decides), else it passes. In a weighted run ``max_mean_loss`` checks the weighted mean,
    whose interval the tables show."""
    if gate == "max_mean_loss" and float(row.get("weight_sum", math.nan)) == 0 and row["count"]:
        # A group whose weights sum to 0 has no weighted mean: not checked, never passed on
        # NaN nor on its unweighted mean (row_mean's fallback); fail_unchecked decides.
        return GateFailure(gate, grouping, label, math.nan, limit,
                           f"{detail + ', ' if detail else ''}n {int(row['count'])}, weights sum to 0: no weighted mean",
                           key=key, failed=bool(unchecked))
    v = _row_value(row, gate)
    if not _failed(gate, v, limit):
        return None
    if gate == "max_mean_loss" and on_ci and "ci_low" in row.index:
        lo = float(row["ci_low"])
        if lo != lo and unchecked is not None:
            return GateFailure(gate, grouping, label, v, limit, _eval_detail(gate, row, detail)
                               + "; require_ci_above_limit needs an interval (2 or more rows)",
                               key=key, failed=unchecked)
        if not (lo == lo and beyond(lo, limit)):
            return None
    return GateFailure(gate, grouping, label, v, limit, _eval_detail(gate, row, detail), key=key)


def _eval_detail(gate: str, row: Any, where: str) -> str:
    """The one detail of a failed evaluate gate, in evaluate, compare and history alike:
    ``[where, ]n N`` and what the figure rests on: ``max_mean_loss`` its interval (``CI [lo,
    hi]``, ``no CI``; a weighted run: ``weighted mean, n_eff N``), ``max_clipped_fraction``
    the rows clipped low. ``where``: ``""`` (evaluate), ``candidate`` (compare), ``latest
    run`` (history)."""
    from .display import is_weighted

    parts = [where] if where else []
    if gate == "max_mean_loss" and is_weighted(row):
        parts.append(f"weighted mean, n_eff {float(row.get('n_eff', math.nan)):.4g}")
    else:
        parts.append(f"n {int(row['count'])}")
    if gate == "max_mean_loss" and "ci_low" in row.index:
        lo, hi = float(row["ci_low"]), float(row["ci_high"])
        parts.append(f"CI [{lo:.4g}, {hi:.4g}]" if lo == lo else "no CI")
    elif gate == "max_clipped_fraction":
        parts.append(f"{int(row['clipped_low'] if 'clipped_low' in row else row['clipped'])} clipped low")
    return ", ".join(parts)


def check_compare_gates(compare_result: Any, gates: Mapping[str, Any] | None) -> list[GateFailure]:
    """Evaluate gates on a :class:`~evalkit.comparison.CompareResult`; return the failures and
    the gates that could not be checked (``GateFailure.failed`` False, True under
    ``fail_unchecked``).

    ``max_regression`` / ``max_regression_pct`` are checked on every group of every grouping
    (top-level keys) or of the groupings under ``groups:``. A group with fewer than
    ``min_count`` rows in either run is reported but not gated. A group in one run only (a
    region with no rows in the candidate) cannot be checked: each of its gates is returned
    as not checked, never a silent pass; so is a gate whose ``min_count`` leaves no group of
    a grouping, and a gate on a grouping of one run only (history's rule for a grouping
    absent from the latest run); a grouping neither run has is a ConfigError. With
    ``require_ci_excludes_zero``, a regression counts only when ``ci_low > 0`` (a group with
    no interval, n < 2, then never fails). Evaluate gates (``max_mean_loss``...) are checked
    on the candidate's statistics.
    """
    if not gates:
        return []
    validate_gates(gates)
    gates = normalize_gates(gates)
    failures: list[GateFailure] = []
    groups_cfg: Mapping[str, Any] = gates.get("groups") or {}
    tables = compare_result.tables
    candidate = getattr(compare_result, "candidate", None)
    one_side = _groupings_of_one_run(compare_result, groups_cfg)
    strict = bool(gates.get("fail_unchecked", False))
    if candidate is not None:
        failures += _candidate_gates(candidate, gates, groups_cfg, tables, strict, one_side)
    top = {k: gates[k] for k in (*COMPARE_GATES, *GATE_OPTIONS) if k in gates}
    for gname, df in [*tables.items(), *((g, None) for g in one_side)]:
        cfg = grouping_gates(top, groups_cfg.get(gname), (*COMPARE_GATES, *GATE_OPTIONS))
        limits = {g: float(cfg[g]) for g in COMPARE_GATES if g in cfg}
        if not limits:
            continue
        if df is None:  # a grouping of one run only: its groups cannot be compared
            failures += [GateFailure(g, gname, "", math.nan, lim, _grouping_in_one_run(one_side[gname]),
                                     failed=strict) for g, lim in limits.items()]
            continue
        min_count = max(int(cfg.get("min_count", 0)), 1)
        need_ci = bool(cfg.get("require_ci_excludes_zero", False))
        failures += _compare_unchecked(df, gname, limits, min_count, strict)
        cols = [c for c in df.columns if c not in _COMPARE_COLUMNS]
        if len(df) and (df["method"] == "missing").all():
            # Groups on both sides but none in common (e.g. keys of different types, renamed
            # values): a gate that checks nothing must not pass.
            gate = next(iter(limits))
            failures.append(GateFailure(
                gate, gname, "", math.nan, limits[gate],
                f"no group of {gname!r} is in both runs ({int((df['baseline_count'] > 0).sum())} only in the "
                f"baseline, {int((df['candidate_count'] > 0).sum())} only in the candidate), so no group "
                "could be compared"))
            continue
        for row in df.to_dict("records"):
            if row["method"] == "missing":
                continue
            if min(row["baseline_count"], row["candidate_count"]) < min_count:
                continue
            lo = row["ci_low"]
            if need_ci and not (lo is not None and lo == lo and lo > 0):
                continue
            label, key = group_key(row, cols)
            ci = (f"{row['method']} CI [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
                  if row["ci_low"] == row["ci_low"] else f"{row['method']}, no CI")
            base = (f"baseline {row['baseline_mean']:.6g} -> candidate {row['candidate_mean']:.6g}, "
                    f"n {row['baseline_count']}/{row['candidate_count']}, {ci}")
            if "max_regression" in limits and beyond(row["delta"], limits["max_regression"]):
                failures.append(GateFailure("max_regression", gname, label, float(row["delta"]),
                                            limits["max_regression"], base, key=key))
            rel = row["rel_delta"]
            if "max_regression_pct" in limits and rel == rel and beyond(100 * rel, limits["max_regression_pct"]):
                failures.append(GateFailure("max_regression_pct", gname, label, 100 * float(rel),
                                            limits["max_regression_pct"], base, key=key))
    return failures


def _compare_unchecked(df: Any, gname: str, limits: Mapping[str, float], min_count: int,
                       strict: bool) -> list[GateFailure]:
    """The compare gates of one grouping that cannot be checked: on a group in one run only
    (its rows vanished from the candidate, or it is new there), and every gate when
    ``min_count`` leaves no group in both runs. (No group in both runs at all is a failure of
    its own in :func:`check_compare_gates`.)"""
    out: list[GateFailure] = []
    both = df["method"] != "missing"
    if not both.any():
        return out
    for row in df[~both].to_dict("records"):
        out += _compare_unchecked_row(row, df, gname, limits, strict)
    n = np.minimum(df.loc[both, "baseline_count"].to_numpy(), df.loc[both, "candidate_count"].to_numpy())
    if not (n >= min_count).any():
        out += [GateFailure(g, gname, "", math.nan, lim, _no_group_left(min_count, gname, n), failed=strict)
                for g, lim in limits.items()]
    return out


def _groupings_of_one_run(compare_result: Any, groups_cfg: Mapping[str, Any]) -> dict[str, str]:
    """The groupings of one run only (name -> ``"baseline"`` / ``"candidate"``), whose gates
    are not checked; a grouping ``groups_cfg`` gates that neither run has is a ConfigError
    (:func:`unknown_grouping`)."""
    tables = compare_result.tables
    candidate = getattr(compare_result, "candidate", None)
    meta = getattr(compare_result, "metadata", None) or {}
    one_side = {**dict.fromkeys(meta.get("groupings_only_in_baseline") or (), "baseline"),
                **dict.fromkeys(meta.get("groupings_only_in_candidate") or (), "candidate")}
    if candidate is not None:  # (a CompareResult records them; a bare one may not)
        one_side.update({g: "candidate" for g in candidate.groups if g not in tables})
    runs = {"baseline": [*tables, *(g for g, side in one_side.items() if side == "baseline")],
            "candidate": [*tables, *(g for g, side in one_side.items() if side == "candidate")]}
    for gname in groups_cfg:
        if gname not in tables and gname != "overall" and gname not in one_side:
            raise ConfigError(unknown_grouping(gname, runs))
    return one_side


def _candidate_gates(candidate: Any, gates: Mapping[str, Any], groups_cfg: Mapping[str, Any],
                     tables: Mapping[str, Any], strict: bool,
                     one_side: Mapping[str, str] | None = None) -> list[GateFailure]:
    """The evaluate gates compare checks on the candidate's statistics; those on a group the
    candidate lacks (rows in the baseline only), or on a grouping it lacks (the baseline's
    only), are not checked (``failed=strict``)."""
    gone = [g for g, side in (one_side or {}).items() if side == "baseline" and g in groups_cfg]
    out = [GateFailure(gate, gname, "", math.nan, float(groups_cfg[gname][gate]),
                       _grouping_in_one_run("baseline"), failed=strict)
           for gname in gone for gate in EVAL_GATES if gate in groups_cfg[gname]]
    kept = {**gates, "groups": {g: sub for g, sub in groups_cfg.items() if g not in gone}}
    out += check_gates(candidate, kept, detail="candidate", unchecked_failed=strict)
    for gname, sub in groups_cfg.items():
        evals = {g: float(sub[g]) for g in EVAL_GATES if g in sub}
        df = tables.get(gname)
        if evals and df is not None and len(df) and gname != "overall":
            gone = df[(df["candidate_count"] == 0) & (df["baseline_count"] > 0)]
            out += [f for row in gone.to_dict("records") for f in _compare_unchecked_row(row, df, gname, evals, strict)]
    return out


def _grouping_in_one_run(side: str) -> str:
    """Why a gate on a grouping of one run only is not checked (as history's "the grouping is
    absent from the latest run")."""
    other = "candidate" if side == "baseline" else "baseline"
    return f"the grouping is absent from the {other} (it is in the {side} only)"


def unknown_grouping(gname: str, runs: Mapping[str, Sequence[str]]) -> str:
    """The usage error of a gate on a grouping no input has (a typo, or a grouping no run
    computed): compare and history name every input's groupings. A grouping some input has
    and the checked run lacks is not this: its gates are "not checked" (``fail_unchecked``
    decides), as a nightly job expects of a grouping missing from one night's data."""
    lists = {name: ", ".join(dict.fromkeys(groupings)) for name, groupings in runs.items()}
    head = f"gates: no grouping {gname!r} in {'either run' if len(lists) == 2 else 'any run'}; groupings are "
    if len(set(lists.values())) == 1:
        return head + next(iter(lists.values()))
    return head + "; ".join(f"{text} ({name})" for name, text in lists.items())


def _compare_unchecked_row(row: Mapping[str, Any], df: Any, gname: str, limits: Mapping[str, float],
                           strict: bool) -> list[GateFailure]:
    """Each gate of ``limits`` on a group in one run only, as not checked (``failed=strict``)."""
    label, key = group_key(row, [c for c in df.columns if c not in _COMPARE_COLUMNS])
    side = (f"in the baseline only ({row['baseline_count']} rows; none in the candidate)"
            if row["baseline_count"] > 0 else f"in the candidate only ({row['candidate_count']} rows)")
    return [GateFailure(g, gname, label, math.nan, lim, f"the group has rows {side}: it cannot be compared",
                        failed=strict, key=key) for g, lim in limits.items()]


def check_history_gates(history_result: Any, gates: Mapping[str, Any] | None,
                        latest: Mapping[str, Any] | None = None) -> list[GateFailure]:
    """Evaluate gates on a :class:`~evalkit.trend.HistoryResult`; return every gate that
    failed or could not be checked (``GateFailure.failed`` False).

    On every group of every grouping (top-level keys) or of the groupings under ``groups:``:

    * ``max_drift``: ``drift = latest - reference`` (the group's mean ``lookback`` runs
      before the latest run) above the limit fails; ``max_drift_pct``: ``100 * drift /
      reference`` above the limit (percent) fails. A group of the latest run with no rows in
      the reference run is *not checked* (below); a group absent from the latest run, or with
      fewer than ``min_count`` rows in either, is not gated; with
      ``require_ci_excludes_zero``, a drift counts only when its interval lies above zero.
    * ``max_change_pct``: a change the scan flagged *upwards* (worse) whose shift exceeds the
      limit (percent) fails; ``max_change_pct: 0`` fails on any flagged rise.

    Evaluate gates (``max_mean_loss``...) are checked on the latest run's tables
    (``latest``: grouping name -> the latest run's rows, with ``count``, ``mean``,
    ``clipped_low`` and ``accuracy``). A value equal to its limit passes.

    **Not checked.** A gate on a grouping absent from the latest run, a drift gate on a
    series shorter than ``lookback + 1`` runs or on a group absent from the reference run, and ``max_change_pct`` on a series shorter
    than ``min_before + 1`` runs cannot be checked: each is returned with ``failed=False``
    (reported as "not checked", not a failure) unless the gates set ``fail_unchecked: true``
    (then they fail). A new nightly job's first week is thus not a failure by default.
    """
    if not gates:
        return []
    validate_gates(gates)
    gates = normalize_gates(gates)
    groups_cfg: Mapping[str, Any] = gates.get("groups") or {}
    trends = history_result.trends
    for gname in groups_cfg:
        if gname not in trends:  # in no run read (absent from the latest only: not checked, below)
            raise ConfigError(unknown_grouping(gname, {"runs": list(trends)}))
    meta = history_result.metadata
    absent: Mapping[str, int] = meta.get("absent_from_latest") or {}
    strict = bool(gates.get("fail_unchecked", False))
    out: list[GateFailure] = []

    def unchecked(gate: str, gname: str, why: str, limit: float) -> None:
        out.append(GateFailure(gate, gname, "", math.nan, limit, why, failed=strict))

    out += _latest_run_gates(latest or {}, gates, groups_cfg, absent, unchecked, strict, trends)
    top = {k: gates[k] for k in (*HISTORY_GATES, *GATE_OPTIONS) if k in gates}
    lookback = int(meta["settings"]["lookback"])
    min_before = int(meta["settings"].get("min_before", 3))
    checked: list[tuple[str, Any, dict[str, float], dict[str, Any]]] = []
    for gname, df in trends.items():
        cfg = grouping_gates(top, groups_cfg.get(gname), (*HISTORY_GATES, *GATE_OPTIONS))
        limits = {g: float(cfg[g]) for g in HISTORY_GATES if g in cfg}
        if not limits:
            continue
        n = int((meta.get("series_runs") or {}).get(gname, 0))
        if gname in absent:  # (its trend may be empty: no run of the latest segment holds it)
            for gate, limit in limits.items():
                unchecked(gate, gname, f"the grouping is absent from the latest run (last in run "
                                       f"{absent[gname]})", limit)
            continue
        if df.empty:
            continue
        for gate in [g for g in ("max_drift", "max_drift_pct") if g in limits and n < lookback + 1]:
            unchecked(gate, gname, f"{n} run(s) in the series; the drift over {lookback} runs needs "
                                   f"{lookback + 1}", limits.pop(gate))
        scanned = min(n, int(meta["settings"].get("window", n)))  # the scan sees the window only
        if "max_change_pct" in limits and scanned < min_before + 1:
            where = f"{n} run(s) in the series" if scanned == n else \
                f"{n} run(s) in the series, but the scan sees a window of {scanned}"
            unchecked("max_change_pct", gname, f"{where}; the change scan needs at least {min_before + 1}",
                      limits.pop("max_change_pct"))
        checked.append((gname, df, limits, cfg))
    rising = _drift_family(checked, float(meta["settings"].get("confidence", 0.95)))
    shifts = _change_family(checked, float(meta["settings"].get("alpha", 0.05)))
    for gname, df, limits, cfg in checked:
        out += _history_group_gates(df, gname, limits, cfg, lookback, strict, rising.get(gname),
                                    shifts.get(gname))
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of ``p`` (1-D; NaN entries are not tests and stay
    NaN): rejecting where the adjusted value is at most ``alpha`` bounds the probability of
    any false rejection among the tests by ``alpha``, whatever their dependence (Holm 1979,
    "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size:
        order = idx[np.argsort(p[idx], kind="stable")]
        m = idx.size
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


def _drift_family(checked: list[tuple[str, Any, dict[str, float], dict[str, Any]]],
                  confidence: float) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Which drifts count as rises under ``require_ci_excludes_zero``, with the family of
    groups controlled: the drift of every group a drift gate with that option checks
    (measurable, ``min_count`` rows in both runs) is one test, ``z = drift / se`` with
    ``se`` from the drift's normal interval at ``confidence``, two-sided p-value; Holm's
    adjustment over all of them (every grouping of the night) and a rise counts when its
    adjusted p-value is at most ``1 - confidence`` and the drift is above zero. One group alone
    is the interval test (``drift_ci_low > 0``); over the ~23 groups of a nightly config the
    chance that a stable night fails stays at most ``(1 - confidence) / 2``, not ~1 in 5.
    Grouping -> (counts-as-rise per row, Holm-adjusted p per row, family size)."""
    z_q = NormalDist().inv_cdf(0.5 + confidence / 2)
    parts, pieces = [], []
    for gname, df, limits, cfg in checked:
        on = (bool(cfg.get("require_ci_excludes_zero", False)) and not df.empty
              and ("max_drift" in limits or "max_drift_pct" in limits))
        min_count = max(int(cfg.get("min_count", 0)), 1)
        drift = df["drift"].to_numpy(dtype=np.float64)
        se = (df["drift_ci_high"].to_numpy(dtype=np.float64) - df["drift_ci_low"].to_numpy(dtype=np.float64)) / (2 * z_q)
        ok = (on & ~np.isnan(drift) & (np.minimum(df["latest_count"].to_numpy(), df["reference_count"].to_numpy())
                                        >= min_count)) if on else np.zeros(len(df), dtype=bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(drift) / se
        p = np.where(ok, _normal_sf2(z), np.nan)
        p = np.where(ok & (drift == 0), 1.0, p)
        parts.append(p)
        pieces.append((gname, drift))
    if not parts:
        return {}
    adj_all = holm(np.concatenate(parts))
    m = int((~np.isnan(adj_all)).sum())
    out, at = {}, 0
    for (gname, drift), p in zip(pieces, parts, strict=True):
        adj = adj_all[at:at + len(p)]
        at += len(p)
        out[gname] = (~np.isnan(adj) & (adj <= 1 - confidence) & (drift > 0), adj, m)
    return out


def _change_family(checked: list[tuple[str, Any, dict[str, float], dict[str, Any]]],
                   alpha: float) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Which flagged shifts ``max_change_pct`` may fail on, with the family of groups
    controlled across groupings: the change scan's p-value (``p_value``: the best split's
    two-sided t test, Bonferroni-bounded over the candidate splits, Worsley 1979) of every
    group a ``max_change_pct`` gate checks that night (a series long enough, ``min_count``
    rows in the latest run), in every grouping, is one test; Holm's step-down adjustment over
    all of them (Holm 1979, Scand. J. Statist. 6:65-70; :func:`holm`, as the drift gate's
    family) and a shift counts when its adjusted p-value is at most ``alpha`` (history's
    flagging level). The flags in ``history.md`` stay Benjamini-Hochberg within each grouping
    (a report of what moved); the gate, which fails the night, holds the chance that a
    stable night fails at most ``alpha`` however many groupings are gated (Benjamini-Hochberg
    within each of 5 groupings: up to ~5 x alpha). Grouping -> (counts per row, Holm-adjusted
    p per row, family size)."""
    parts = []
    for gname, df, limits, cfg in checked:
        min_count = max(int(cfg.get("min_count", 0)), 1)
        if "max_change_pct" in limits and not df.empty and "p_value" in df:
            on = df["latest_count"].to_numpy() >= min_count
            parts.append((gname, np.where(on, df["p_value"].to_numpy(dtype=np.float64), np.nan)))
    if not parts:
        return {}
    adj_all = holm(np.concatenate([p for _g, p in parts]))
    m = int((~np.isnan(adj_all)).sum())
    out, at = {}, 0
    for gname, p in parts:
        adj = adj_all[at:at + len(p)]
        at += len(p)
        out[gname] = (~np.isnan(adj) & (adj <= alpha), adj, m)
    return out


def _normal_sf2(z: np.ndarray) -> np.ndarray:
    """Two-sided normal tail probability ``P(|Z| >= z)`` (NaN stays NaN; ``z`` inf gives 0)."""
    z = np.asarray(z, dtype=np.float64)
    return np.where(np.isnan(z), np.nan, _ERFC(np.nan_to_num(z, nan=0.0) / math.sqrt(2)).astype(np.float64))


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _latest_run_gates(latest: Mapping[str, Any], gates: Mapping[str, Any], groups_cfg: Mapping[str, Any],
                      absent: Mapping[str, int], unchecked: Any, strict: bool = False,
                      trends: Mapping[str, Any] | None = None) -> list[GateFailure]:
    """Evaluate gates on the latest run; those on a grouping absent from it, on a group of the
    window absent from it (``trends``), or whose ``min_count`` leaves no group are not checked
    (``failed=strict``)."""
    wanted = any(g in gates or any(g in (sub or {}) for sub in groups_cfg.values()) for g in EVAL_GATES)
    if not latest or not wanted:
        return []
    missing = [g for g, sub in groups_cfg.items() if g not in latest and any(k in (sub or {}) for k in EVAL_GATES)]
    for gname in missing:
        for gate in [k for k in EVAL_GATES if k in groups_cfg[gname]]:
            why = (f"the grouping is absent from the latest run (last in run {absent[gname]})"
                   if gname in absent else "the grouping is absent from the latest run")
            unchecked(gate, gname, why, float(groups_cfg[gname][gate]))
    kept = {**gates, "groups": {g: sub for g, sub in groups_cfg.items() if g not in missing}}
    out = check_gates(_LatestRun(latest), kept, detail="latest run", unchecked_failed=strict)
    for gname, sub in kept["groups"].items():  # a group of the window with no rows tonight
        trend = (trends or {}).get(gname)
        if trend is None or trend.empty or gname == "overall":
            continue
        cols = gname.split(",")
        for row in trend[trend["latest"].isna() & (trend["runs"] > 0)].to_dict("records"):
            label, key = group_key(_user_keys(row, cols), cols)
            out += [GateFailure(gate, gname, label, math.nan, float(sub[gate]), _ABSENT_GROUP, failed=strict,
                                key=key) for gate in EVAL_GATES if gate in sub]
    return out


def _user_keys(row: Mapping[str, Any], cols: Sequence[str]) -> dict[str, Any]:
    """The keys of a row of a history trend by the user's column names (the trend names a
    key column ``t`` ``input:t``: :func:`evalkit.columns.history_key_column`)."""
    from .columns import history_key_column

    return {c: row[history_key_column(c)] for c in cols}


_ABSENT_GROUP = ("the group has no rows in the latest run (it has rows in earlier runs of the window): "
                 "its gates cannot be checked")


def _history_group_gates(df: Any, gname: str, limits: Mapping[str, float], cfg: Mapping[str, Any],
                         lookback: int, strict: bool = False,
                         rising: tuple[np.ndarray, np.ndarray, int] | None = None,
                         shifts: tuple[np.ndarray, np.ndarray, int] | None = None) -> list[GateFailure]:
    """The drift and change gates on every group of one grouping's trend. A drift gate on a
    group of the latest run that has no rows in the reference run is not checked
    (``failed=strict``): it must never pass silently. With ``require_ci_excludes_zero`` a
    drift counts only where ``rising`` (:func:`_drift_family`) says so; a flagged shift fails
    ``max_change_pct`` only where ``shifts`` (:func:`_change_family`) says so."""
    failures: list[GateFailure] = []
    min_count = max(int(cfg.get("min_count", 0)), 1)
    need_ci = bool(cfg.get("require_ci_excludes_zero", False))
    cols = [] if gname == "overall" else gname.split(",")
    seen = dict.fromkeys(limits, 0)  # groups each gate checked, and the counts it could have
    counts: dict[str, list[int]] = {g: [] for g in limits}
    for i, row in enumerate(df.to_dict("records")):
        label, key = group_key(_user_keys(row, cols), cols)
        if row["latest"] != row["latest"]:  # in the window, not in the latest run: never silent
            failures += [GateFailure(g, gname, label, math.nan, limits[g], _ABSENT_GROUP, failed=strict, key=key)
                         for g in limits]
            continue
        for g in limits:
            if g == "max_change_pct" or row["drift"] == row["drift"]:
                n = row["latest_count"] if g == "max_change_pct" else min(row["latest_count"], row["reference_count"])
                counts[g].append(int(n))
                seen[g] += int(n >= min_count)
        drift_ok = (row["drift"] == row["drift"]
                    and min(row["latest_count"], row["reference_count"]) >= min_count
                    and not (need_ci and not (rising is not None and rising[0][i])))
        detail = (f"{row['reference']:.6g} -> {row['latest']:.6g} over the last {lookback} runs, "
                  + (f"CI [{row['drift_ci_low']:.4g}, {row['drift_ci_high']:.4g}]" if row["drift_ci_low"] == row["drift_ci_low"]
                     else "no CI"))  # compare's and evaluate's wording; never "[nan, nan]" (rt-hist8 F9)
        if need_ci and rising is not None:
            detail += f", Holm-adjusted p = {rising[1][i]:.2g} over {rising[2]} drift tests"
        if drift_ok and "max_drift" in limits and beyond(row["drift"], limits["max_drift"]):
            failures.append(GateFailure("max_drift", gname, label, float(row["drift"]),
                                        limits["max_drift"], detail, key=key))
        if row["latest"] == row["latest"] and row["reference"] != row["reference"]:
            failures += [GateFailure(g, gname, label, math.nan, limits[g],
                                     f"the group has no rows in the reference run ({lookback} runs "
                                     "before the latest): its drift cannot be measured", failed=strict, key=key)
                         for g in ("max_drift", "max_drift_pct") if g in limits]
        pct = row["drift_pct"]
        if drift_ok and "max_drift_pct" in limits and pct == pct and beyond(pct, limits["max_drift_pct"]):
            failures.append(GateFailure("max_drift_pct", gname, label, float(pct),
                                        limits["max_drift_pct"], detail, key=key))
        if ("max_change_pct" in limits and row["changed"] and row["direction"] == "up"
                and row["latest_count"] >= min_count and beyond(row["change_pct"], limits["max_change_pct"])
                and (shifts is None or shifts[0][i])):
            family = f", Holm-adjusted p = {shifts[1][i]:.2g} over {shifts[2]} change tests" if shifts else ""
            failures.append(GateFailure(
                "max_change_pct", gname, label, float(row["change_pct"]), limits["max_change_pct"],
                f"mean {row['before']:.6g} -> {row['after']:.6g} since run {row['change_run']}, "
                f"q = {row['q_value']:.2g}{family}", key=key))
    failures += [GateFailure(g, gname, "", math.nan, limits[g], _no_group_left(min_count, gname, counts[g]),
                             failed=strict) for g in limits if counts[g] and not seen[g]]
    failures += _no_common_group(df, gname, limits, lookback)
    return failures


def _no_common_group(df: Any, gname: str, limits: Mapping[str, float], lookback: int) -> list[GateFailure]:
    """A drift gate on a grouping that has groups in the latest run and in the reference run
    but none in both (its key values recoded: EU -> eu, store 7 -> "007") checks nothing, and
    fails as compare's gates do in that case, whatever ``fail_unchecked`` says (rt-main10 F8:
    every such gate was "not checked" and the night passed)."""
    drift_gates = [g for g in ("max_drift", "max_drift_pct") if g in limits]
    if not drift_gates or df.empty:
        return []
    latest = df["latest"].notna().to_numpy()
    reference = df["reference"].notna().to_numpy()
    if not latest.any() or not reference.any() or (latest & reference).any():
        return []
    why = (f"no group of {gname!r} is in both the latest run and the reference run ({lookback} runs "
           f"before): {int(latest.sum())} only in the latest, {int(reference.sum())} only in the "
           "reference run (key values renamed or of another type?), so no drift could be measured")
    return [GateFailure(g, gname, "", math.nan, limits[g], why) for g in drift_gates]


@dataclass
class _LatestRun:
    """The latest run's tables, shaped like an EvalResult for :func:`check_gates`."""

    tables: Mapping[str, Any]

    @property
    def overall(self) -> Any:
        return self.tables["overall"].iloc[0]

    @property
    def groups(self) -> dict[str, Any]:
        return {k: v for k, v in self.tables.items() if k != "overall"}


_COMPARE_COLUMNS = {"baseline_count", "candidate_count", "baseline_mean", "candidate_mean", "delta",
                    "rel_delta", "ci_low", "ci_high", "method", "status", "n_paired", "ci_method"}
