"""A month of the platform, priced from what its pods request, the volumes they claim and what the cluster adds.

The figure is requests-based: a pod costs its CPU and memory requests at the node's per-unit prices, times the
bin-packing overhead (nodes are never fully requested), whatever it really uses. A workload without requests costs
nothing here, though it still uses the node: `unrequested` names them. Pure: no Pulumi, no cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from capacity.prices import HOURS_PER_MONTH, Prices

GIB = 2**30


@dataclass(frozen=True)
class Container:
    name: str
    cpu_millicores: int
    memory_bytes: int
    # Where the request comes from: the stack file, our values, a chart's default, a controller's built-in default.
    source: str


@dataclass(frozen=True)
class Workload:
    """What runs the pods of one part of the platform: how many, what each requests and claims."""

    name: str
    component: str
    replicas_min: int
    replicas_max: int
    containers: tuple[Container, ...]
    volume_bytes_per_pod: int = 0
    # A DaemonSet: one pod on every node.
    per_node: bool = False
    # A Job or hook: it runs at deploy time and is gone, so a month does not pay for it.
    runs_to_completion: bool = False

    @property
    def cpu_millicores(self) -> int:
        return sum(c.cpu_millicores for c in self.containers)

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers)

    def replicas(self, at_max: bool) -> int:
        return self.replicas_max if at_max else self.replicas_min


@dataclass(frozen=True)
class LineItem:
    kind: str  # compute, storage, load balancer, control plane
    name: str
    usd: float


@dataclass(frozen=True)
class MonthlyCost:
    items: tuple[LineItem, ...]
    nodes: int

    @property
    def total(self) -> float:
        return sum(item.usd for item in self.items)

    def by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for item in self.items:
            totals[item.kind] = totals.get(item.kind, 0.0) + item.usd
        return totals

    def largest(self, count: int) -> list[LineItem]:
        return sorted(self.items, key=lambda item: item.usd, reverse=True)[:count]


def nodes_needed(workloads: list[Workload], prices: Prices, at_max: bool) -> int:
    """Nodes of the priced type that hold every steady pod's requests at the bin-packing overhead (at least one)."""
    steady = [w for w in workloads if not w.runs_to_completion and not w.per_node]
    cpu = sum(w.replicas(at_max) * w.cpu_millicores for w in steady) / 1000
    memory = sum(w.replicas(at_max) * w.memory_bytes for w in steady) / GIB
    return max(
        1,
        math.ceil(cpu * prices.bin_packing_overhead / prices.node_vcpus),
        math.ceil(memory * prices.bin_packing_overhead / prices.node_memory_gib),
    )


def monthly_cost(
    workloads: list[Workload],
    prices: Prices,
    *,
    at_max: bool,
    load_balancers: int,
    spot_discount: float = 0.0,
) -> MonthlyCost:
    """The month at every autoscaler's minimum (`at_max` False) or maximum; `spot_discount` (0.65 = 65% off) applies
    to compute only."""
    if not 0 <= spot_discount < 1:
        raise ValueError(f"a spot discount is a fraction in [0, 1), not {spot_discount}")
    nodes = nodes_needed(workloads, prices, at_max)
    compute_factor = prices.bin_packing_overhead * (1 - spot_discount) * HOURS_PER_MONTH
    items = []
    for workload in workloads:
        if workload.runs_to_completion:
            continue
        pods = nodes if workload.per_node else workload.replicas(at_max)
        hourly = workload.cpu_millicores / 1000 * prices.vcpu_hour + workload.memory_bytes / GIB * prices.gib_hour
        if hourly:
            items.append(LineItem("compute", workload.name, pods * hourly * compute_factor))
        if workload.volume_bytes_per_pod:
            claimed_gib = pods * workload.volume_bytes_per_pod / GIB
            items.append(LineItem("storage", workload.name, claimed_gib * prices.gib_month_storage))
    items += [
        LineItem("storage", "node root volumes", nodes * prices.node_root_volume_gib * prices.gib_month_storage),
        LineItem(
            "load balancer", "Network Load Balancer", load_balancers * prices.load_balancer_hour * HOURS_PER_MONTH
        ),
        LineItem("control plane", "managed control plane", prices.control_plane_hour * HOURS_PER_MONTH),
    ]
    return MonthlyCost(items=tuple(items), nodes=nodes)


def unrequested(workloads: list[Workload]) -> list[str]:
    """Steady workloads with a container that requests nothing: the requests-based figure leaves them out."""
    return [
        f"{w.name}/{c.name}"
        for w in workloads
        if not w.runs_to_completion
        for c in w.containers
        if not (c.cpu_millicores or c.memory_bytes)
    ]
