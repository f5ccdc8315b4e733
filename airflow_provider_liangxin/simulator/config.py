"""Run-wide settings of the simulator, kept in one plain dataclass so tests, the CLI and the server share them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_provider_liangxin.simulator.faults import FaultConfig
from airflow_provider_liangxin.simulator.lifecycle import parse_durations

#: The one documented development key. It is public on purpose: the simulator guards nothing real, and a
#: fixed default lets examples and e2e tests run without any setup.
DEV_API_KEY = "sk-liangxin-simulator-dev"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: waiting, queuing, generating (seconds): long enough to watch a task move, short enough for demos.
DEFAULT_DURATIONS: tuple[float, float, float] = (1.0, 1.0, 3.0)


@dataclass
class SimulatorConfig:
    """Everything that shapes one simulator run; faults can also be replaced at runtime (``/_sim/faults``)."""

    api_keys: tuple[str, ...] = (DEV_API_KEY,)
    #: Seconds spent in waiting, queuing and generating. All zero gives instant success.
    durations: tuple[float, float, float] = DEFAULT_DURATIONS
    #: 0 is deterministic. ``j`` > 0 scales each phase of each task by a factor drawn from U(1-j, 1+j), seeded
    #: by ``seed`` and the task id, so a demo looks alive yet a rerun with the same ids behaves the same.
    jitter: float = 0.0
    seed: int = 0
    #: SQLite file that keeps tasks across restarts; None keeps them in memory only.
    db_path: str | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Base of the result URLs (e.g. when the simulator sits behind a proxy); None uses the server's address.
    public_base_url: str | None = None
    #: Accept ``http://127.0.0.1`` / ``http://localhost`` callback URLs (local receivers in tests).
    allow_insecure_callbacks: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    callback_attempts: int = 3
    #: First retry delay in seconds; doubles on each further attempt.
    callback_backoff: float = 0.5
    callback_timeout: float = 5.0
    #: Result images are scaled so their long side is at most this many pixels (keeps them cheap to make).
    max_image_side: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.api_keys, str):
            self.api_keys = (self.api_keys,)
        self.api_keys = tuple(self.api_keys)
        if not self.api_keys or not all(isinstance(k, str) and k for k in self.api_keys):
            raise ValueError("api_keys must hold at least one non-empty key")
        self.durations = parse_durations(self.durations)
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if isinstance(self.faults, Mapping):
            self.faults = FaultConfig.from_dict(self.faults)
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be >= 1")
        if self.public_base_url:
            self.public_base_url = self.public_base_url.rstrip("/")
