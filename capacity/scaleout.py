"""How fast the platform scales out, simulated with the autoscalers' documented algorithms and this stack's settings.

The HorizontalPodAutoscaler (which KEDA creates and feeds for every ScaledObject) runs, every sync period
(kube-controller-manager's --horizontal-pod-autoscaler-sync-period, 15 s by default):

1. desired = ceil(current × metric / target), left at `current` while the ratio is within the 10% tolerance; for an
   AverageValue target (KEDA's external metrics) that is ceil(total / target per pod);
2. stabilisation: the highest recommendation of the scale-down window and the lowest of the scale-up window bound it;
3. rate limits: each policy allows, from the replicas the period started with, +value pods (Pods) or +value% (Percent,
   rounded up; down: -value%, rounded down); selectPolicy Max takes the policy allowing the most change, Min the least;
   then minReplicas and maxReplicas.

Sources: Kubernetes, "Horizontal Pod Autoscaling" (https://kubernetes.io/docs/concepts/workloads/autoscaling/
horizontal-pod-autoscale/: the algorithm, the 15 s sync period, the 0.1 tolerance, configurable scaling behaviour);
KEP-853 "Configurable scale up/down velocity for HPA" (https://www.kubernetes.dev/resources/keps/853/: policies,
selectPolicy, stabilizationWindowSeconds, the period start computed from the scale events inside the period); the
controller's code (pkg/controller/podautoscaler/horizontal.go: calculateScaleUpLimitWithScalingRules,
calculateScaleDownLimitWithBehaviors, stabilizeRecommendationWithBehaviors) for the rounding. KEDA's ScaledObject
specification (https://keda.sh/docs/2.15/reference/scaledobject-spec/): `pollingInterval` is how often KEDA checks a
trigger to activate a workload from zero, `cooldownPeriod` only applies when scaling to zero, "scaling from 1 to N
replicas is handled by the Kubernetes Horizontal Pod Autoscaler", and an AverageValue metric gives total / target
replicas "regardless of the current replica count". With a minimum of 1 or more, neither KEDA setting moves a
scale-out: the HPA's sync period does.

Pure: no Pulumi, no cluster. Rates and queues are piecewise constant between events, so times are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

DEFAULT_SYNC_SECONDS = 15
DEFAULT_TOLERANCE = 0.1


class Policy(Protocol):
    kind: str
    value: int
    period_seconds: int


class Direction(Protocol):
    stabilization_window_seconds: int
    select_policy: str
    policies: Sequence[Policy]


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    change: int  # pods added (> 0) or removed (< 0)


def desired_replicas(current: int, usage_ratio: Fraction | float, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Step 1: ceil(current × ratio), or `current` while the ratio is within the tolerance."""
    ratio = Fraction(usage_ratio)
    if abs(ratio - 1) <= Fraction(tolerance):
        return current
    return math.ceil(current * ratio)


def average_value_recommendation(current: int, total: float, target_per_pod: float, tolerance: float) -> int:
    """Step 1 for an AverageValue target: the ratio is total / (target × current)."""
    return desired_replicas(current, Fraction(total) / (Fraction(target_per_pod) * current), tolerance)


def stabilized(
    current: int, recommendation: int, history: Sequence[tuple[float, int]], now: float, up: Direction, down: Direction
) -> int:
    """Step 2: no higher than the lowest recommendation of the scale-up window, no lower than the highest of the
    scale-down window (`history`: earlier (time, recommendation), the current one included by `recommendation`)."""
    up_bound = min([recommendation, *(r for t, r in history if t > now - up.stabilization_window_seconds)])
    down_bound = max([recommendation, *(r for t, r in history if t > now - down.stabilization_window_seconds)])
    return min(max(current, up_bound), down_bound)


def _changed_in_period(events: Sequence[ScaleEvent], now: float, period: int, sign: int) -> int:
    return sum(abs(e.change) for e in events if e.change * sign > 0 and e.time > now - period)


def scale_up_limit(current: int, events: Sequence[ScaleEvent], now: float, up: Direction) -> int:
    """The most replicas step 3 allows now: each policy counts from the replicas its period started with."""
    limits = []
    for policy in up.policies:
        start = current - _changed_in_period(events, now, policy.period_seconds, +1)
        start += _changed_in_period(events, now, policy.period_seconds, -1)
        if policy.kind == "Pods":
            limits.append(start + policy.value)
        else:
            limits.append(math.ceil(start * Fraction(100 + policy.value, 100)))
    return max(limits) if up.select_policy == "Max" else min(limits)


def scale_down_limit(current: int, events: Sequence[ScaleEvent], now: float, down: Direction) -> int:
    """The fewest replicas step 3 allows now; selectPolicy Max (the most change) is the lowest of them."""
    limits = []
    for policy in down.policies:
        start = current - _changed_in_period(events, now, policy.period_seconds, +1)
        start += _changed_in_period(events, now, policy.period_seconds, -1)
        if policy.kind == "Pods":
            limits.append(start - policy.value)
        else:
            limits.append(math.floor(start * Fraction(100 - policy.value, 100)))
    return min(limits) if down.select_policy == "Max" else max(limits)


@dataclass(frozen=True)
class Autoscaler:
    min_replicas: int
    max_replicas: int
    # AverageValue target: metric units per pod (requests/s per API pod, ready messages per worker pod).
    target_per_pod: float
    scale_up: Direction
    scale_down: Direction
    tolerance: float = DEFAULT_TOLERANCE


@dataclass
class HpaMemory:
    """What the controller remembers between syncs: recommendations (stabilisation) and scale events (policies)."""

    replicas: int
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)


def reconcile(autoscaler: Autoscaler, memory: HpaMemory, now: float, metric_total: float) -> int:
    """One sync: the replicas the HPA sets now, remembered for the next."""
    current = memory.replicas
    recommendation = average_value_recommendation(
        current, metric_total, autoscaler.target_per_pod, autoscaler.tolerance
    )
    wanted = stabilized(
        current, recommendation, memory.recommendations, now, autoscaler.scale_up, autoscaler.scale_down
    )
    memory.recommendations.append((now, recommendation))
    if wanted > current:
        ceiling = min(
            autoscaler.max_replicas, max(current, scale_up_limit(current, memory.events, now, autoscaler.scale_up))
        )
        wanted = min(wanted, ceiling)
    elif wanted < current:
        floor = max(
            autoscaler.min_replicas, min(current, scale_down_limit(current, memory.events, now, autoscaler.scale_down))
        )
        wanted = max(wanted, floor)
    if wanted != current:
        memory.events.append(ScaleEvent(now, wanted - current))
        memory.replicas = wanted
    return wanted


# The burst and the fleets


@dataclass(frozen=True)
class Fleet:
    """One autoscaled workload: its autoscaler, what one ready pod handles, and how long a new pod takes to be ready."""

    name: str
    autoscaler: Autoscaler
    per_pod_capacity: float
    readiness_delay_seconds: float


@dataclass(frozen=True)
class Burst:
    api_requests_per_second: float  # offered from t = 0 on, each request one single-step run
    steady_requests_per_second: float  # before t = 0
    queued_steps: int  # already queued at t = 0
    steps_per_message: int  # ready steps the dispatcher packs into one queue message (KEDA counts messages)


@dataclass(frozen=True)
class Settings:
    sync_seconds: float = DEFAULT_SYNC_SECONDS
    # The API's metric: a Prometheus rate over `api_metric_window_seconds`, scraped every `api_metric_lag_seconds`.
    api_metric_window_seconds: float = 60
    api_metric_lag_seconds: float = 15
    horizon_seconds: float = 900


@dataclass(frozen=True)
class Arrival:
    time: float
    fleet: str
    pods: int
    ready: int  # ready pods of the fleet once these are


@dataclass(frozen=True)
class Decision:
    time: float
    fleet: str
    metric: float
    previous: int
    replicas: int


@dataclass
class Timeline:
    decisions: list[Decision] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    api_capacity_met_at: float | None = None
    worker_capacity_met_at: float | None = None
    queue_drained_at: float | None = None


def drain_time(queued: float, arrival_rate: float, service_rate: float) -> float | None:
    """Seconds until a queue empties at constant rates, None if it never does."""
    if queued <= 0:
        return 0.0
    if service_rate <= arrival_rate:
        return None
    return queued / (service_rate - arrival_rate)


def simulate(api: Fleet, workers: Fleet, burst: Burst, settings: Settings | None = None) -> Timeline:
    """The burst from t = 0: API requests at `burst.api_requests_per_second` (each queueing one step) and
    `burst.queued_steps` already queued. Both autoscalers sync at t = sync, 2 × sync...: the burst lands just after a
    sync, the worst phase."""
    settings = settings or Settings()
    timeline = Timeline()
    ready = {api.name: api.autoscaler.min_replicas, workers.name: workers.autoscaler.min_replicas}
    memory = {fleet.name: HpaMemory(fleet.autoscaler.min_replicas) for fleet in (api, workers)}
    pending: list[tuple[float, str, int]] = []  # (ready at, fleet, pods)
    queue = float(burst.queued_steps)
    now = 0.0

    def served() -> float:
        return min(burst.api_requests_per_second, ready[api.name] * api.per_pod_capacity)

    def consumed() -> float:
        return ready[workers.name] * workers.per_pod_capacity

    def note_capacity(time: float) -> None:
        if timeline.api_capacity_met_at is None and served() >= burst.api_requests_per_second:
            timeline.api_capacity_met_at = time
        if timeline.worker_capacity_met_at is None and consumed() >= burst.api_requests_per_second:
            timeline.worker_capacity_met_at = time

    served_history = [(-math.inf, burst.steady_requests_per_second), (now, served())]
    note_capacity(now)
    if queue == 0:
        timeline.queue_drained_at = 0.0
    tick = settings.sync_seconds
    while now < settings.horizon_seconds:
        following = min([tick, *(t for t, _, _ in pending)])
        # The queue over [now, following): constant rates in between.
        emptied_in = drain_time(queue, served(), consumed()) if queue > 0 else None
        if emptied_in is not None and now + emptied_in <= following:
            queue = 0.0
            timeline.queue_drained_at = now + emptied_in
        else:
            queue = max(0.0, queue + (served() - consumed()) * (following - now))
            if queue > 0:
                timeline.queue_drained_at = None
        now = following
        for arrival in [p for p in pending if p[0] == now]:
            pending.remove(arrival)
            _, name, pods = arrival
            ready[name] += pods
            timeline.arrivals.append(Arrival(now, name, pods, ready[name]))
        served_history.append((now, served()))
        note_capacity(now)
        if now == tick:
            api_metric = _window_average(
                served_history, now - settings.api_metric_lag_seconds, settings.api_metric_window_seconds
            )
            messages = math.ceil(queue / burst.steps_per_message)
            for fleet, metric in ((api, api_metric), (workers, messages)):
                before = memory[fleet.name].replicas
                after = reconcile(fleet.autoscaler, memory[fleet.name], now, metric)
                timeline.decisions.append(Decision(now, fleet.name, metric, before, after))
                if after > before:
                    pending.append((now + fleet.readiness_delay_seconds, fleet.name, after - before))
                elif after < before:
                    remove_pods(before - after, fleet.name, pending, ready)
            tick += settings.sync_seconds
        if queue == 0 and timeline.api_capacity_met_at is not None and not pending:
            break
    return timeline


def remove_pods(pods: int, fleet: str, pending: list[tuple[float, str, int]], ready: dict[str, int]) -> None:
    """A scale-down deletes pods that are not ready yet first (the ReplicaSet's order), then ready ones."""
    for entry in sorted((p for p in pending if p[1] == fleet), reverse=True):
        taken = min(pods, entry[2])
        pending.remove(entry)
        if taken < entry[2]:
            pending.append((entry[0], fleet, entry[2] - taken))
        pods -= taken
        if not pods:
            return
    ready[fleet] -= pods


def _window_average(history: Sequence[tuple[float, float]], end: float, window: float) -> float:
    """The average of a piecewise-constant rate (history: (from time, rate)) over [end - window, end]; its value at
    `end` when the window is 0."""
    if window == 0:
        return next(rate for start, rate in reversed(history) if start <= end)
    total, begin = 0.0, end - window
    for (start, rate), (following, _) in zip(history, [*history[1:], (math.inf, 0.0)], strict=True):
        overlap = min(following, end) - max(start, begin)
        if overlap > 0:
            total += rate * overlap
    return total / window
