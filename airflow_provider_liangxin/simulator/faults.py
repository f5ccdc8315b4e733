"""Fault injection: run-wide fractions, per-model overrides and per-prompt markers.

Three ways in, one vocabulary: a :class:`FaultConfig` (config object, CLI ``--faults`` JSON, or ``POST
/_sim/faults`` at runtime) sets seeded fractions for load tests; ``models`` overrides them per model; markers in
``input.prompt`` force one behaviour for one request, which is what contract tests want.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from airflow_provider_liangxin.simulator.lifecycle import parse_durations

#: The longest ``slow_seconds``: a slow answer is a fault to watch, not a hung connection.
MAX_SLOW_SECONDS = 3600.0

#: Fractions in [0, 1]; each is one independent seeded draw where it applies.
RATE_KEYS: tuple[str, ...] = (
    "create_error_rate",  # createTask -> 500 business shape
    "quota_error_rate",  # createTask -> 403 gateway shape (insufficient_user_quota)
    "upstream_error_rate",  # createTask -> 422 business shape
    "rate_limit_rate",  # createTask -> 429 gateway shape + Retry-After
    "drop_rate",  # createTask -> connection closed without a response (no task created)
    "recordinfo_error_rate",  # recordInfo -> 500 business shape
    "recordinfo_rate_limit_rate",  # recordInfo -> 429 gateway shape + Retry-After
    "recordinfo_drop_rate",  # recordInfo -> connection closed without a response
    "slow_rate",  # createTask / recordInfo answered after slow_seconds
    "task_fail_rate",  # the task ends in fail instead of success
    "never_rate",  # the task stays generating forever
)
#: Keys a per-model rule may override (everything but the RNG seed and the nested tables).
MODEL_RULE_KEYS: frozenset[str] = frozenset(
    set(RATE_KEYS) | {"slow_seconds", "retry_after", "fail_code", "fail_msg", "durations"}
)

DEFAULT_FAIL_CODE = "500"
DEFAULT_FAIL_MSG = "simulated generation failure"

_MARKER = re.compile(r"\[sim:([a-z0-9-]+)((?::[^:\]]*){0,2})\]", re.IGNORECASE)
_STATUS_MARKERS = {"403": 403, "422": 422, "429": 429, "500": 500}
#: Markers without arguments, by the PromptMarkers field they set.
_FLAG_MARKERS = {
    "slow": "slow",
    "drop": "drop",
    "never": "never",
    "echo-auth": "echo_auth",
    "no-callback": "no_callback",
}


def _is_number(value: Any) -> bool:
    """A real, finite number: JSON's NaN/Infinity literals and booleans are not durations or rates."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class FaultConfig:
    """Fault settings of a run. Every field is JSON-native so the admin API can round-trip it."""

    seed: int = 0
    create_error_rate: float = 0.0
    quota_error_rate: float = 0.0
    upstream_error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    drop_rate: float = 0.0
    recordinfo_error_rate: float = 0.0
    recordinfo_rate_limit_rate: float = 0.0
    recordinfo_drop_rate: float = 0.0
    slow_rate: float = 0.0
    task_fail_rate: float = 0.0
    never_rate: float = 0.0
    #: Delay of a "slow" response, in seconds.
    slow_seconds: float = 1.0
    #: Value of the Retry-After header on 429 answers, in seconds.
    retry_after: int = 1
    fail_code: str = DEFAULT_FAIL_CODE
    fail_msg: str = DEFAULT_FAIL_MSG
    #: Overrides the server's lifecycle durations for new tasks (waiting, queuing, generating); None keeps them.
    durations: tuple[float, float, float] | None = None
    #: Models answered with 400 "no price configured" (the documented pricing-table rejection).
    unpriced_models: tuple[str, ...] = ()
    #: Per-model overrides: ``{"flux-2-pro": {"task_fail_rate": 1.0}}``; keys from MODEL_RULE_KEYS.
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_numbers()
        self._normalise_lists_and_texts()
        self._check_models()

    def _check_numbers(self) -> None:
        """Finite, in range, of the right type: a NaN that got in would break every later createTask."""
        for key in RATE_KEYS:
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{key} must be a number in [0, 1], got {value!r}")
        if not _is_number(self.slow_seconds) or not 0 <= self.slow_seconds <= MAX_SLOW_SECONDS:
            raise ValueError(
                f"slow_seconds must be a finite number in [0, {MAX_SLOW_SECONDS:g}], got {self.slow_seconds!r}"
            )
        if not isinstance(self.retry_after, int) or isinstance(self.retry_after, bool) or self.retry_after < 0:
            raise ValueError(f"retry_after must be an integer >= 0, got {self.retry_after!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.durations is not None:
            object.__setattr__(self, "durations", parse_durations(self.durations))

    def _normalise_lists_and_texts(self) -> None:
        if not isinstance(self.fail_code, str | int) or isinstance(self.fail_code, bool):
            raise ValueError(f"fail_code must be a string, got {self.fail_code!r}")
        if not isinstance(self.fail_msg, str):
            raise ValueError(f"fail_msg must be a string, got {self.fail_msg!r}")
        object.__setattr__(self, "fail_code", str(self.fail_code))
        if isinstance(self.unpriced_models, str) or not all(isinstance(m, str) for m in self.unpriced_models):
            raise ValueError(f"unpriced_models must be a list of model names, got {self.unpriced_models!r}")
        object.__setattr__(self, "unpriced_models", tuple(self.unpriced_models))

    def _check_models(self) -> None:
        if not isinstance(self.models, Mapping):
            raise ValueError(f"models must be an object, got {type(self.models).__name__}")
        for model, rule in self.models.items():
            if not isinstance(rule, Mapping):
                raise ValueError(f"models[{model!r}] must be an object")
            unknown = set(rule) - MODEL_RULE_KEYS
            if unknown:
                raise ValueError(f"models[{model!r}] has unknown keys: {', '.join(sorted(unknown))}")
            replace(self, models={}, **rule)  # validates the override values
        object.__setattr__(self, "models", {m: dict(r) for m, r in self.models.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FaultConfig:
        """Strict: an unknown key is an error, because a typo would otherwise silently inject nothing."""
        if data is None:
            return cls()
        if isinstance(data, FaultConfig):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"fault config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["durations"] = list(self.durations) if self.durations is not None else None
        data["unpriced_models"] = list(self.unpriced_models)
        return data

    def for_model(self, model: str | None) -> FaultConfig:
        """The settings that apply to one model (the run-wide ones with its rule laid over them)."""
        rule = self.models.get(model) if model else None
        return replace(self, models={}, **rule) if rule else self


@dataclass(frozen=True)
class PromptMarkers:
    """What the ``[sim:...]`` markers of one prompt ask for."""

    status: int | None = None
    fail: tuple[str, str] | None = None
    slow: bool = False
    drop: bool = False
    never: bool = False
    #: recordInfo answers 401 with the request's Authorization header in the message (a hostile server).
    echo_auth: bool = False
    #: The callback is lost: never sent, whatever callBackUrl says (the fallback poll must finish the task).
    no_callback: bool = False


NO_MARKERS = PromptMarkers()


def parse_markers(prompt: Any) -> PromptMarkers:
    """Read every marker of a prompt; unknown markers are ignored so real prompts can never break."""
    if not isinstance(prompt, str) or "[sim:" not in prompt.lower():
        return NO_MARKERS
    found: dict[str, Any] = {}
    for match in _MARKER.finditer(prompt):
        name = match.group(1).lower()
        args = match.group(2).split(":")[1:] if match.group(2) else []
        if name in _STATUS_MARKERS:
            found["status"] = _STATUS_MARKERS[name]
        elif name == "fail":
            code = args[0].strip() if args and args[0].strip() else DEFAULT_FAIL_CODE
            msg = args[1].strip() if len(args) > 1 and args[1].strip() else DEFAULT_FAIL_MSG
            found["fail"] = (code, msg)
        elif name in _FLAG_MARKERS:
            found[_FLAG_MARKERS[name]] = True
    return PromptMarkers(**found)


class FaultDice:
    """One seeded RNG for all fraction-based faults, so a load test with the same seed injects the same faults
    (given the same request order)."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._per_model: dict[str | None, FaultConfig] = {}

    def for_model(self, model: str | None) -> FaultConfig:
        found = self._per_model.get(model)
        if found is None:
            found = self._per_model[model] = self.config.for_model(model)
        return found

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        return self._rng.random() < rate
