"""Quality gates: limits a nightly job checks after the report is written.

Gates of ``evaluate`` (config key ``gates``)::

    gates:
      max_mean_loss: 0.5            # overall mean loss
      max_clipped_fraction: 0.01    # overall share of clipped rows
      min_accuracy: 0.8
      min_count: 100                # groups smaller than this are reported but not gated
      groups:                       # per grouping, same keys, applied to every group
        class: {max_mean_loss: 1.2}

Each failed gate is described as ``<gate> <grouping>[<group>]: observed X > limit Y``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

EVAL_GATES = ("max_mean_loss", "max_clipped_fraction", "min_accuracy")
GATE_KEYS = set(EVAL_GATES) | {"min_count", "groups"}


@dataclass(frozen=True)
class GateFailure:
    """One failed gate."""

    gate: str
    grouping: str
    group: str
    observed: float
    limit: float

    def __str__(self) -> str:
        where = self.grouping if not self.group else f"{self.grouping}[{self.group}]"
        op = ">" if self.gate.startswith("max") else "<"
        return f"{self.gate} {where}: observed {self.observed:.6g} {op} limit {self.limit:.6g}"


def validate_gates(gates: Mapping[str, Any], source: str = "gates") -> None:
    """Reject unknown gate keys (a typo must not disable a gate silently)."""
    from .errors import closest

    for key, value in gates.items():
        if key not in GATE_KEYS and not key.startswith(("max_regression", "require_ci")):
            raise ConfigError(f"{source}: unknown gate {key!r}{closest(key, GATE_KEYS)}")
        if key == "groups":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: 'groups' must map grouping names to gates")
            for gname, sub in value.items():
                if not isinstance(sub, Mapping):
                    raise ConfigError(f"{source}: gates of grouping {gname!r} must be a mapping")
                validate_gates(sub, f"{source}.groups.{gname}")


def _row_value(row: Any, gate: str) -> float:
    if gate == "max_mean_loss":
        return float(row["mean"])
    if gate == "max_clipped_fraction":
        return float(row["clipped"]) / float(row["count"]) if row["count"] else 0.0
    return float(row["accuracy"])


def _failed(gate: str, value: float, limit: float) -> bool:
    return value > limit if gate.startswith("max") else value < limit


def check_gates(result: Any, gates: Mapping[str, Any] | None) -> list[GateFailure]:
    """Evaluate the gates of an :class:`~evalkit.api.EvalResult`; return the failures."""
    if not gates:
        return []
    validate_gates(gates)
    failures: list[GateFailure] = []
    min_count = int(gates.get("min_count", 0))
    for gate in EVAL_GATES:
        if gate in gates:
            v = _row_value(result.overall, gate)
            if _failed(gate, v, float(gates[gate])):
                failures.append(GateFailure(gate, "overall", "", v, float(gates[gate])))
    for gname, sub in (gates.get("groups") or {}).items():
        if gname not in result.groups:
            raise ConfigError(f"gates: no grouping {gname!r}; groupings are {', '.join(result.groups)}")
        df = result.groups[gname]
        key_cols = [c for c in df.columns if c not in _STATS]
        sub_min = int(sub.get("min_count", min_count))
        for _, row in df.iterrows():
            if row["count"] < max(sub_min, 1):
                continue
            label = ",".join(str(row[c]) for c in key_cols)
            for gate in EVAL_GATES:
                if gate in sub:
                    v = _row_value(row, gate)
                    if _failed(gate, v, float(sub[gate])):
                        failures.append(GateFailure(gate, gname, label, v, float(sub[gate])))
    return failures


_STATS = {"count", "mean", "std", "min", "p50", "p90", "p99", "max", "sum", "clipped", "accuracy",
          "weight_sum", "weighted_mean"}
