"""The authoring model: a Workflow as plain slotted dataclasses (read-only by convention).

`parse.py` builds these from a JSON-like document; every later phase reads them and
never the raw document. They are not `frozen` because frozen dataclasses set every field through
`object.__setattr__`, which made parsing 100k tasks ~30% slower; no phase writes
to them. Conventions:

- durations are int milliseconds, `None` when the field is absent;
- enums are the proto enum value names (`"ON_FAILURE_COMPENSATE"`), `""` when absent;
- optional scalars (`max_attempts`, `priority`, ...) are `None` when absent;
- sub-messages are `None` when absent; maps are plain dicts (treat as read-only);
- JSON values (`inputs`, `outputs`, `default`) are new JSON-like objects in which
  integral floats became ints, so `10` (YAML) and `10.0` (proto JSON) compile alike;
- a list item that failed to parse is `None` so later positions keep their path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, is_not

JsonValue = object  # None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]


@dataclass(slots=True)
class RetrySpec:
    max_attempts: int | None = None
    initial_interval: int | None = None
    backoff_coefficient: float | None = None
    max_interval: int | None = None
    jitter: float | None = None
    non_retryable_errors: tuple[str | None, ...] = ()


@dataclass(slots=True)
class TimeoutsSpec:
    schedule_to_start: int | None = None
    start_to_close: int | None = None
    heartbeat: int | None = None
    schedule_to_close: int | None = None


@dataclass(slots=True)
class BreakerSpec:
    failure_threshold: int | None = None
    open_for: int | None = None
    half_open_max_calls: int | None = None
    failure_rate_threshold: float | None = None
    window: int | None = None
    on_open: str = ""
    key: str = ""


@dataclass(slots=True)
class PlacementSpec:
    require: dict[str, str] = field(default_factory=dict)
    prefer: dict[str, str] = field(default_factory=dict)
    environment: str = ""


@dataclass(slots=True)
class ResourcesSpec:
    cpu: str = ""
    memory: str = ""
    gpu: int | None = None
    custom: dict[str, int] = field(default_factory=dict)
    isolate: bool = False


@dataclass(slots=True)
class LimitSpec:
    """`Task.limit`: a concurrency limit across executions."""

    key: str = ""
    max: int | None = None
    name: str = ""


@dataclass(slots=True)
class RateLimitUseSpec:
    """One entry of `Task.rate_limits`; `units` is an integer's text or CEL."""

    name: str = ""
    key: str = ""
    units: str = ""


@dataclass(slots=True)
class RateLimitDefinitionSpec:
    """One entry of `Workflow.rate_limits`."""

    name: str = ""
    rate: str = ""
    burst: int | None = None


@dataclass(slots=True)
class CacheSpec:
    key: str = ""
    ttl: int | None = None


@dataclass(slots=True)
class SideTaskSpec:
    """A fallback or a compensation."""

    type: str = ""
    inputs: dict[str, JsonValue] = field(default_factory=dict)
    retry: RetrySpec | None = None
    timeouts: TimeoutsSpec | None = None


@dataclass(slots=True)
class RepeatSpec:
    until: str = ""
    max_iterations: int | None = None


@dataclass(slots=True)
class InputSpec:
    type: str = ""
    required: bool = False
    default: JsonValue = None
    has_default: bool = False
    description: str = ""


@dataclass(slots=True)
class TaskDefaults:
    retry: RetrySpec | None = None
    timeouts: TimeoutsSpec | None = None
    circuit_breaker: BreakerSpec | None = None
    placement: PlacementSpec | None = None
    resources: ResourcesSpec | None = None
    priority: int | None = None


@dataclass(slots=True)
class BudgetSpec:
    """`Workflow.budget`, `Task.budget`: limits as written (docs/usage.md)."""

    cost: float | None = None
    tokens: float | None = None
    counters: dict[str, float] = field(default_factory=dict)
    on_exceeded: str = ""


@dataclass(slots=True)
class EstimateSpec:
    """`Task.estimate`: each amount is a number's text or a CEL expression."""

    cost: str = ""
    tokens: str = ""
    counters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Task:
    index: int  # position in the document's `tasks` list
    id: str = ""
    type: str = ""
    depends_on: tuple[str | None, ...] = ()
    inputs: dict[str, JsonValue] = field(default_factory=dict)
    when: str = ""
    trigger: str = ""
    retry: RetrySpec | None = None
    timeouts: TimeoutsSpec | None = None
    fallback: SideTaskSpec | None = None
    compensation: SideTaskSpec | None = None
    circuit_breaker: BreakerSpec | None = None
    placement: PlacementSpec | None = None
    resources: ResourcesSpec | None = None
    secrets: tuple[str | None, ...] = ()
    priority: int | None = None
    estimated_duration: int | None = None
    description: str = ""
    budget: BudgetSpec | None = None
    estimate: EstimateSpec | None = None
    # Plans that grow at runtime (docs/runtime-plans.md).
    for_each: str = ""
    max_parallel: int = 0
    repeat: RepeatSpec | None = None
    workflow: str = ""
    dynamic: bool = False
    # Flow control (docs/flow-control.md).
    limit: LimitSpec | None = None
    rate_limits: tuple[RateLimitUseSpec | None, ...] = ()
    cache: CacheSpec | None = None

    @property
    def path(self) -> str:
        return f"tasks[{self.index}]"


class PlainTask(Task):
    """A task the parser's fast path made: only `index`, `id`, `type`, `depends_on`
    and `inputs` are set, every other field has its default. The phases that look at
    the other fields skip such tasks (`Workflow.beyond_plain`): ~20 ms per phase at
    100k tasks. Never `dataclasses.replace` one (the copy would keep the class)."""

    __slots__ = ()


@dataclass(slots=True)
class Workflow:
    name: str = ""
    version: str = ""
    description: str = ""
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    defaults: TaskDefaults | None = None
    on_failure: str = ""
    max_parallel: int = 0
    tasks: tuple[Task | None, ...] = ()
    outputs: dict[str, JsonValue] = field(default_factory=dict)
    pause_after_failures: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    rate_limits: tuple[RateLimitDefinitionSpec | None, ...] = ()
    budget: BudgetSpec | None = None
    # What `beyond_plain` and `task_types` found (derived, so set on first use).
    _beyond: list[Task] | None = field(default=None, init=False, repr=False, compare=False)
    _types: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    def beyond_plain(self) -> list[Task]:
        """The tasks that may set a field beyond id, type, depends_on and inputs: all
        but the `PlainTask`s (and the None entries). Found once, in C (the model is
        read-only once parsed)."""
        if self._beyond is None:
            tasks = self.tasks
            self._beyond = [
                t
                for t in compress(tasks, map(is_not, map(type, tasks), repeat(PlainTask)))
                if t is not None
            ]
        return self._beyond

    def task_types(self) -> frozenset[str]:
        """The distinct types of the tasks (made in C: a phase that looks for a
        few types asks this before looking at each task)."""
        if self._types is None:
            self._types = frozenset(map(_get_type, filter(None, self.tasks)))
        return self._types


_get_type = attrgetter("type")
