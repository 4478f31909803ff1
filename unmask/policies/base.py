"""The policy base class (hyperparameters as init fields, per-request state reset) and the spec
parser `name:key=value,...` shared by every role. Role-specific protocols live in each module."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class SpecError(ValueError):
    """A policy or recipe spec that cannot be built; the message says what is wrong."""


# The valid ranges a policy's numeric fields may declare (see Policy.bounds).
RANGES: dict[str, Callable[[float], bool]] = {
    "[0, 1]": lambda v: 0 <= v <= 1,
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
}


@dataclass(frozen=True)
class Int:
    """A tunable integer field's search range, both ends included. An end given as a string
    names an earlier field of the same policy (its sampled value) or a request size
    (`gen_len`), so that ranges which depend on each other stay valid (unmask tune)."""

    lo: int | str
    hi: int | str
    log: bool = False


@dataclass(frozen=True)
class Float:
    """A tunable float field's search range (ends as for Int), on a grid of `step` from `lo`
    (so that specs stay short and readable), or log-uniform without one."""

    lo: float | str
    hi: float | str
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """A tunable field that takes one of a few values (booleans, modes, an optional interval)."""

    values: tuple


Space = Int | Float | Choice


@dataclass
class Policy:
    """Init fields are hyperparameters; fields declared with `init=False` are per-request state.
    `bounds` names each numeric field's valid range (a key of RANGES), checked when the policy
    is built; a float field is never NaN or infinite. `info`: the values the policy chose at
    the last step (B_t, tau_t, ...), copied into each StepEvent. Each row of a request has its
    own instance, so per-request state is per row."""

    name: ClassVar[str] = ""
    role: ClassVar[str] = ""
    bounds: ClassVar[dict[str, str]] = {}
    # What `unmask tune` searches: a range per tunable init field (policies.base.check_space
    # holds it inside `bounds`), declared by each policy so that a new one joins the search
    # without editing the tuner. `untuned` names the init fields left at their defaults.
    space: ClassVar[dict[str, Space]] = {}
    untuned: ClassVar[tuple[str, ...]] = ()
    # True when the policy reads the logits of every generated position (RowView.gen_logits),
    # not only the block's: the step plan then asks the forward for them.
    wants_gen_logits: ClassVar[bool] = False
    info: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
            rule = self.bounds.get(f.name)
            if rule is not None and value is not None and not RANGES[rule](value):
                raise ValueError(f"{f.name} must be {rule}, got {fmt_value(value)}")

    def reset(self, req: Any) -> None:
        """Start of a request: forget per-request state."""

    def observe(self, event: Any) -> None:
        """After every step: the feedback hook adaptive policies learn from."""

    @property
    def spec(self) -> str:
        """Canonical spec string: every hyperparameter, so a record is reproducible."""
        parts = [f"{f.name}={fmt_value(getattr(self, f.name))}" for f in fields(self) if f.init]
        return self.name + (":" + ",".join(parts) if parts else "")


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return fmt_float(v)
    return str(v)


def fmt_float(v: float) -> str:
    """Shortest exact spelling, without '+' (specs are joined with '+'): 0.9, 1e16, 0."""
    return repr(v).removesuffix(".0").replace("e+", "e")


def _convert(cls: type, key: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    optional = "None" in text
    if optional and raw.lower() in ("none", "null", ""):
        return None
    try:
        if "bool" in text:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if "int" in text:
            return int(raw)
        if "float" in text:
            return float(raw)
    except ValueError:
        kind = "true/false" if "bool" in text else text.replace(" | None", "")
        raise SpecError(f"{cls.name}: {key}={raw!r} is not a valid {kind}") from None
    return raw


def build(
    registry: dict[str, type[Policy]], role: str, spec: str, base: Policy | None = None
) -> Policy:
    """`name` or `name:key=value,key=value` -> a policy instance of `role`. When `base` is a
    policy of the same name, unspecified parameters keep its values (overrides merge)."""
    name, _, params = spec.strip().partition(":")
    cls = registry.get(name)
    if cls is None:
        raise SpecError(f"unknown {role} policy {name!r}; known: {', '.join(sorted(registry))}")
    init = {f.name: f for f in fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    if base is not None and base.name == name:
        kwargs = {k: getattr(base, k) for k in init}
    given: set[str] = set()
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise SpecError(f"{name}: expected key=value, got {item!r}")
        if key in given:
            raise SpecError(f"{name}: {key} is given twice")
        given.add(key)
        if key not in init:
            known = ", ".join(init) or "none"
            raise SpecError(f"{name}: unknown parameter {key!r} (parameters: {known})")
        kwargs[key] = _convert(cls, key, raw.strip(), init[key].type)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{name}: {e}") from None


def fresh(policy: Policy) -> Policy:
    """A copy with the same hyperparameters and clean per-request state."""
    return dataclasses.replace(policy)


@dataclass
class ConfidenceHistory:
    """CadLLM's feedback signal: after every forward, the mean confidence of the block positions
    that were masked before that step's reveals (of its own row: each row keeps its own).
    A block-start forward that reveals the block's first token unconditionally (the model's
    `block_head_first`, Dream's released loops) adds nothing. Kept by each policy that reads it,
    from the same step events."""

    values: list[float] = dataclasses.field(default_factory=list)

    def observe(self, event: Any, head_first: bool) -> None:
        if head_first and event.step_in_block == 0:
            return
        if bool(event.masked.any()):
            self.values.append(float(event.conf[event.masked].double().mean()))

    def mean(self, last: int) -> float:
        tail = self.values[-last:]
        return sum(tail) / len(tail)


def check_space(cls: type[Policy]) -> None:
    """Refuse a declared search space that could sample an invalid policy: every init field is
    tuned or named untuned (not both); a range's ends, and the extremes of what a string end
    names (an earlier tuned field's range, or gen_len from 1 up), lie inside the field's
    `bounds` (ranges are monotone, so every value between them does too); fixed ends are
    ordered; a log range stays above 0; a choice is one of the field's valid values."""
    init = [f.name for f in fields(cls) if f.init]
    where = f"{cls.role} policy {cls.name!r}"
    for key in cls.space:
        if key not in init:
            raise TypeError(f"{where}: space names {key!r}, which is not a parameter")
        if key in cls.untuned:
            raise TypeError(f"{where}: {key!r} is both tuned and untuned")
    missing = [k for k in init if k not in cls.space and k not in cls.untuned]
    if missing:
        raise TypeError(f"{where}: parameters neither tuned nor untuned: {', '.join(missing)}")
    extremes: dict[str, list[float]] = {"gen_len": [1, 2**31]}

    def reach(end: float | str, key: str) -> list[float]:
        if isinstance(end, str):
            if end not in extremes:
                raise TypeError(
                    f"{where}: {key} range end {end!r} is neither an earlier tuned parameter "
                    "nor gen_len"
                )
            return extremes[end]
        return [end]

    for key, dim in cls.space.items():
        rule = cls.bounds.get(key)
        if isinstance(dim, Choice):
            if not dim.values:
                raise TypeError(f"{where}: {key} has no choices")
            for v in dim.values:  # the policy itself judges modes and optional values
                try:
                    cls(**{key: v})
                except (TypeError, ValueError) as e:
                    raise TypeError(
                        f"{where}: {key} choice {fmt_value(v)} is invalid: {e}"
                    ) from None
            continue
        lo, hi = reach(dim.lo, key), reach(dim.hi, key)
        if not isinstance(dim.lo, str) and not isinstance(dim.hi, str) and dim.lo > dim.hi:
            raise TypeError(f"{where}: {key} range [{dim.lo}, {dim.hi}] is empty")
        if dim.log and min(lo) <= 0:
            raise TypeError(f"{where}: {key} log range must stay above 0")
        if isinstance(dim, Float) and (dim.step is None) == (not dim.log):
            raise TypeError(f"{where}: {key} needs a step or a log range (one of the two)")
        for v in (*lo, *hi):
            if rule is not None and not RANGES[rule](v):
                raise TypeError(f"{where}: {key} range reaches {fmt_value(v)}, outside {rule}")
        extremes[key] = [min(lo), max(hi)]
