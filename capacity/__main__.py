"""`python -m capacity STACK [--spot-discount X]` (`make capacity STACK=prod`): what a stack costs a month, at its
autoscalers' minimum and maximum, and how fast it scales out under a burst, from the stack's own settings."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

from capacity import prices
from capacity.cost import GIB, MonthlyCost, Workload, unrequested
from capacity.scaleout import Autoscaler, Burst, Decision, Fleet, Settings, Timeline, simulate
from capacity.stack import read_stack
from capacity.workloads import monthly, workloads
from components.app_tier import requests_per_second_query
from components.config import StackConfig
from components.workload import HttpProbes
from tools.mock_stack import STACKS

# Per-pod throughput, from the project's own benchmark (README "Benchmark", bench/README.md, 2-core machine):
# the API process saturates near 950 single POST /v1/.../runs per second (`bench.platform api --rate 600` row);
# one worker process completes 4,754 single-step builtin.noop runs per second (`bench.compare --runs 20000`
# median). Real tasks that take longer than a no-op lower the worker figure in proportion.
API_REQUESTS_PER_SECOND_PER_POD = 950
WORKER_STEPS_PER_SECOND_PER_POD = 4_754
# The dispatcher packs up to 64 ready step ids into one message (README "How a run flows"); under a burst its flushes
# are full (bench/README.md: 1,000-3,000 steps in 16-47 messages). KEDA's queue length counts messages.
STEPS_PER_MESSAGE = 64

# The burst: this many times the steady load, and this many runs queued at once.
BURST_FACTOR = 10
QUEUED_RUNS = 50_000

# A new pod's way to ready, beyond the probes: assumptions, not measurements.
SCHEDULING_SECONDS = 1  # scheduler, sandbox, network
IMAGE_PULL_SECONDS = 5  # the image's layers mostly on the node already (IfNotPresent); a fresh node pulls it whole
PROCESS_START_SECONDS = 3  # Python start, imports, connection pools
# Prometheus scrapes the API every 15 s (components/observability.py, the monitors' `interval`); the HPA may read
# a rate that is that old.
SCRAPE_INTERVAL_SECONDS = 15
# The claim the platform once made about its scale-out.
CLAIMED_SCALE_OUT_SECONDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=STACKS)
    parser.add_argument(
        "--spot-discount", type=float, default=0.0, help="fraction off on-demand compute, such as 0.65 (spot nodes)"
    )
    args = parser.parse_args()
    stack = read_stack(args.stack)
    print_cost(args.stack, stack, args.spot_discount)
    print()
    print_scale_out(stack)


# Cost


def print_cost(name: str, stack: StackConfig, spot_discount: float) -> None:
    found = workloads(stack)
    low, high = monthly(stack, spot_discount)
    promised = stack.promised_monthly_cost_usd
    unit = prices.us_east_1()
    print(f"== {name}: monthly cost, {prices.REGION}, prices read {prices.PRICES_READ_ON}")
    print(
        f"   compute = pod requests × ${unit.vcpu_hour:.4f}/vCPU-h, ${unit.gib_hour:.5f}/GiB-h (an "
        f"{prices.NODE_INSTANCE_TYPE} at ${prices.NODE_HOURLY_USD}/h split in Fargate's vCPU:GB price ratio) × "
        f"{prices.BIN_PACKING_OVERHEAD} bin-packing overhead × {prices.HOURS_PER_MONTH} h"
        + (f" × {1 - spot_discount:.2f} (spot)" if spot_discount else "")
    )
    print(
        f"   storage = claimed GiB × ${prices.GP3_GB_MONTH_USD}/GB-month gp3, plus a {prices.NODE_ROOT_VOLUME_GIB} GiB "
        f"root volume per node; NLB ${prices.NLB_HOURLY_USD}/h + {prices.NLB_AVERAGE_LCUS} NLCU × "
        f"${prices.NLB_LCU_HOURLY_USD}/h; control plane ${prices.CONTROL_PLANE_HOURLY_USD}/h"
    )
    print(f"   {'':<20}{'at minimum':>14}{'at maximum':>14}")
    for kind in ("compute", "storage", "load balancer", "control plane"):
        print(f"   {kind:<20}{_usd(low.by_kind().get(kind, 0)):>14}{_usd(high.by_kind().get(kind, 0)):>14}")
    print(f"   {'total':<20}{_usd(low.total):>14}{_usd(high.total):>14}   promised: about {_usd(promised)}")
    print(f"   {'nodes':<20}{low.nodes:>14}{high.nodes:>14}   ({prices.NODE_INSTANCE_TYPE}, to hold the requests)")
    by_name = {w.name: w for w in found}
    print("   by part:")
    low_parts, high_parts = _by_part(low, by_name), _by_part(high, by_name)
    for part in sorted(high_parts, key=high_parts.get, reverse=True):
        print(f"     {part:<18}{_usd(low_parts.get(part, 0)):>14}{_usd(high_parts[part]):>14}")
    for label, month, at_max in (("at minimum", low, False), ("at maximum", high, True)):
        print(f"   largest {label}:")
        for item in month.largest(4):
            print(f"     {_usd(item.usd):>9}  {item.kind:<13} {_described(by_name.get(item.name), item.name, at_max)}")
    print(f"   vs the promise: {_gap(low.total, promised)} at minimum, {_gap(high.total, promised)} at maximum.")
    print(
        "   What the figure is: requests, not use. A pod that requests nothing costs nothing here though it uses a "
        "node:\n     " + ", ".join(unrequested(found))
    )


def _by_part(month: MonthlyCost, by_name: dict[str, Workload]) -> dict[str, float]:
    """The month by part of the platform (the workload's component); the load balancer and control plane are the
    cluster's, as are the nodes' root volumes."""
    parts: dict[str, float] = {}
    for item in month.items:
        part = by_name[item.name].component if item.name in by_name else "cluster"
        parts[part] = parts.get(part, 0.0) + item.usd
    return parts


def _described(workload: Workload | None, name: str, at_max: bool) -> str:
    if workload is None:
        return name
    pods = workload.replicas(at_max)
    volume = f", {workload.volume_bytes_per_pod // GIB} GiB volume" if workload.volume_bytes_per_pod else ""
    return f"{name} ({pods} × {workload.cpu_millicores / 1000:g} vCPU, {workload.memory_bytes / GIB:g} GiB{volume})"


def _gap(figure: float, promised: float) -> str:
    sign = "+" if figure >= promised else "-"
    return f"{_usd(figure)} is {figure / promised:.0%} of it ({sign}{_usd(abs(figure - promised))})"


def _usd(amount: float) -> str:
    return f"${amount:,.0f}"


# Scale-out


def readiness_delay_seconds() -> float:
    """A new pod's way to ready: scheduled, image pulled, process started, then the startup probe and the readiness
    probe each pass at their first try, which comes up to one period late (components/workload.py)."""
    probes = HttpProbes(port="http").to_k8s()
    return (
        SCHEDULING_SECONDS
        + IMAGE_PULL_SECONDS
        + PROCESS_START_SECONDS
        + probes["startupProbe"]["periodSeconds"]
        + probes["readinessProbe"]["periodSeconds"]
    )


def api_metric_window_seconds() -> float:
    """The range of the rate KEDA's Prometheus trigger reads (components/app_tier.py)."""
    number, unit = re.search(r"\[(\d+)([smh])\]", requests_per_second_query("workflow")).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def fleets(stack: StackConfig, readiness: float | None = None) -> tuple[Fleet, Fleet]:
    delay = readiness_delay_seconds() if readiness is None else readiness
    api, workers = stack.api, stack.workers
    return (
        Fleet(
            "api",
            Autoscaler(
                api.replicas.min,
                api.replicas.max,
                api.requests_per_second_target,
                api.scaling.scale_up,
                api.scaling.scale_down,
            ),
            API_REQUESTS_PER_SECOND_PER_POD,
            delay,
        ),
        Fleet(
            "workers",
            Autoscaler(
                workers.replicas.min,
                workers.replicas.max,
                workers.queue_length_target,
                workers.scaling.scale_up,
                workers.scaling.scale_down,
            ),
            WORKER_STEPS_PER_SECOND_PER_POD,
            delay,
        ),
    )


def burst(stack: StackConfig) -> Burst:
    """Ten times the steady load, steady being what the API's minimum pods serve at their target rate."""
    steady = stack.api.replicas.min * stack.api.requests_per_second_target
    return Burst(
        api_requests_per_second=BURST_FACTOR * steady,
        steady_requests_per_second=steady,
        queued_steps=QUEUED_RUNS,
        steps_per_message=STEPS_PER_MESSAGE,
    )


def settings() -> Settings:
    return Settings(
        api_metric_window_seconds=api_metric_window_seconds(), api_metric_lag_seconds=SCRAPE_INTERVAL_SECONDS
    )


def print_scale_out(stack: StackConfig) -> None:
    api, workers = fleets(stack)
    load = burst(stack)
    base = settings()
    timeline = simulate(api, workers, load, base)
    print(
        f"== scale-out: a burst of {BURST_FACTOR}× the steady load ({load.steady_requests_per_second:,.0f} → "
        f"{load.api_requests_per_second:,.0f} API requests/s, each one single-step run) and {QUEUED_RUNS:,} runs "
        f"queued at once ({-(-QUEUED_RUNS // STEPS_PER_MESSAGE):,} messages of {STEPS_PER_MESSAGE} steps)"
    )
    print(
        f"   per pod: API {API_REQUESTS_PER_SECOND_PER_POD:,} requests/s, worker {WORKER_STEPS_PER_SECOND_PER_POD:,} "
        "no-op steps/s (bench); HPA sync every "
        f"{base.sync_seconds:g} s, tolerance 10%; API metric: a {base.api_metric_window_seconds:g} s rate scraped "
        f"every {base.api_metric_lag_seconds:g} s, target {stack.api.requests_per_second_target}/pod; workers: ready "
        f"messages, target {stack.workers.queue_length_target}/pod"
    )
    print(
        f"   a new pod is ready {readiness_delay_seconds():g} s after the HPA asks: scheduling {SCHEDULING_SECONDS} + "
        f"image {IMAGE_PULL_SECONDS} + start {PROCESS_START_SECONDS} + startup and readiness probes' periods "
        "(assumes room on existing nodes: a new node adds a minute or more)"
    )
    keda = stack.workers.scaling
    print(
        f"   KEDA's pollingInterval ({keda.polling_interval_seconds} s) and cooldownPeriod ({keda.cooldown_seconds} s) "
        "play no part here: with minReplicaCount 1 or more they only activate from and return to zero; 1 to N is "
        "the HPA's, at its sync period (KEDA's ScaledObject specification)"
    )
    _print_timeline(timeline, api, workers, load)
    _print_what_changes_it(stack, load, base, timeline)


def _print_timeline(timeline: Timeline, api: Fleet, workers: Fleet, load: Burst) -> None:
    events = [(d.time, 0, _decision(d, api.name)) for d in timeline.decisions if d.replicas != d.previous]
    events += [(a.time, 1, f"{a.fleet:<8} +{a.pods} ready → {a.ready} ready pods") for a in timeline.arrivals]
    for time, _, text in sorted(events):
        print(f"   t={time:7.1f} s  {text}")
    first = next(d for d in timeline.decisions if d.fleet == workers.name)
    messages = -(-load.queued_steps // load.steps_per_message)
    print(
        f"   workers: the first sync (t = {first.time:g} s) reads {first.metric:,.0f} ready messages → "
        f"{first.replicas} replicas; the minimum {workers.autoscaler.min_replicas} pods drain "
        f"{load.queued_steps:,} steps at {workers.autoscaler.min_replicas * workers.per_pod_capacity:,.0f}/s. "
        f"Had it read the backlog, KEDA counts messages: {messages:,} / {workers.autoscaler.target_per_pod:g} "
        f"per pod = {-(-messages // int(workers.autoscaler.target_per_pod))} pods, not "
        f"{-(-load.queued_steps // int(workers.autoscaler.target_per_pod))} as for single-step messages"
    )
    print(f"   API capacity meets the load:    {_at(timeline.api_capacity_met_at)}")
    print(f"   workers keep up with arrivals:  {_at(timeline.worker_capacity_met_at)}")
    print(f"   queue drained:                  {_at(timeline.queue_drained_at)}")


def _decision(decision: Decision, api_name: str) -> str:
    unit = "requests/s" if decision.fleet == api_name else "messages"
    return f"{decision.fleet:<8} HPA sync: metric {decision.metric:,.0f} {unit} → {decision.replicas} replicas"


def _at(time: float | None) -> str:
    return "never within the simulated 15 min" if time is None else f"t = {time:.1f} s"


def _print_what_changes_it(stack: StackConfig, load: Burst, base: Settings, timeline: Timeline) -> None:
    needed = -(-int(load.api_requests_per_second) // API_REQUESTS_PER_SECOND_PER_POD)
    api, workers = fleets(stack)
    variants = {
        "as configured": (api, workers, base),
        "HPA sync period 5 s (--horizontal-pod-autoscaler-sync-period)": (api, workers, replace(base, sync_seconds=5)),
        "API metric read at once (no scrape lag, no rate window)": (
            api,
            workers,
            replace(base, api_metric_window_seconds=0, api_metric_lag_seconds=0),
        ),
        f"scale-up policy allowing +{needed} pods per period": (
            replace(
                api,
                autoscaler=replace(
                    api.autoscaler,
                    scale_up=replace(
                        api.autoscaler.scale_up,
                        policies=(
                            *api.autoscaler.scale_up.policies,
                            replace(api.autoscaler.scale_up.policies[0], kind="Pods", value=needed),
                        ),
                    ),
                ),
            ),
            workers,
            base,
        ),
        f"pods ready in {PROCESS_START_SECONDS} s (image on the node, probes at once)": (
            *fleets(stack, readiness=PROCESS_START_SECONDS),
            base,
        ),
        f"apiReplicasMin {needed} (the burst's need)": (
            replace(api, autoscaler=replace(api.autoscaler, min_replicas=max(needed, api.autoscaler.min_replicas))),
            workers,
            base,
        ),
    }
    print(
        f"   The platform once claimed scale-out in under {CLAIMED_SCALE_OUT_SECONDS} s; these settings give "
        f"{_at(timeline.api_capacity_met_at)} for the API ({needed} pods needed). What would change it:"
    )
    for label, (api_fleet, worker_fleet, variant_settings) in variants.items():
        result = simulate(api_fleet, worker_fleet, load, variant_settings)
        print(f"     {label:<66} API capacity {_at(result.api_capacity_met_at)}")
    print(
        f"   Not simulated: the CPU and memory triggers (API {stack.api.scale_cpu_percent}% CPU, workers "
        f"{stack.workers.scale_cpu_percent}% CPU). Saturated API pods read above {stack.api.scale_cpu_percent}% at the "
        "first sync, which would act much like the metric read at once above; the request rate alone gives the figure "
        "first printed."
    )


if __name__ == "__main__":
    main()
