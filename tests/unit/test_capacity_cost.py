"""The monthly cost against a tiny workload list priced by hand."""

from __future__ import annotations

import pytest

from capacity.cost import GIB, Container, Workload, monthly_cost, unrequested
from capacity.prices import NODE_HOURLY_USD, NODE_MEMORY_GIB, NODE_VCPUS, Prices, node_unit_prices

ROUND_PRICES = Prices(
    vcpu_hour=0.04,
    gib_hour=0.005,
    gib_month_storage=0.1,
    node_root_volume_gib=20,
    load_balancer_hour=0.03,
    control_plane_hour=0.1,
    bin_packing_overhead=1.25,
    node_vcpus=4,
    node_memory_gib=16,
)
# 2 pods (3 at most) of 500m and 1 GiB, each claiming 10 GiB.
API = Workload("api", "app", 2, 3, (Container("api", 500, GIB, "test"),), volume_bytes_per_pod=10 * GIB)


def month(workloads, *, at_max=False, spot_discount=0.0):
    return monthly_cost(workloads, ROUND_PRICES, at_max=at_max, load_balancers=1, spot_discount=spot_discount)


def test_a_tiny_stack_costs_what_the_hand_computation_says():
    # compute 2 × (0.5 × 0.04 + 1 × 0.005) × 1.25 × 730 = 45.625; volumes 2 × 10 × 0.1 = 2; one node's root
    # volume 20 × 0.1 = 2; load balancer 0.03 × 730 = 21.9; control plane 0.1 × 730 = 73.
    cost = month([API])

    assert cost.nodes == 1
    assert cost.total == pytest.approx(45.625 + 2 + 2 + 21.9 + 73)


def test_the_maximum_prices_every_autoscaler_at_its_maximum():
    assert month([API], at_max=True).by_kind()["compute"] == pytest.approx(3 * 0.025 * 1.25 * 730)


def test_a_spot_discount_lowers_compute_only():
    on_demand, spot = month([API]), month([API], spot_discount=0.6)

    assert spot.by_kind()["compute"] == pytest.approx(on_demand.by_kind()["compute"] * 0.4)
    assert spot.total == pytest.approx(on_demand.total - on_demand.by_kind()["compute"] * 0.6)


def test_a_job_costs_nothing_in_a_month():
    migrate = Workload("migrate", "app", 1, 1, (Container("migrate", 4000, 8 * GIB, "test"),), runs_to_completion=True)

    assert month([API, migrate]).total == pytest.approx(month([API]).total)


def test_a_daemonset_runs_one_pod_per_node():
    # 20 pods of 1 vCPU: 20 × 1.25 / 4 = 6.25, so 7 nodes, each with one 100m exporter.
    big = Workload("worker", "app", 20, 20, (Container("worker", 1000, GIB, "test"),))
    exporter = Workload("exporter", "obs", 1, 1, (Container("exporter", 100, 0, "test"),), per_node=True)

    cost = month([big, exporter])

    assert cost.nodes == 7
    assert [i.usd for i in cost.items if i.name == "exporter"] == [pytest.approx(7 * 0.1 * 0.04 * 1.25 * 730)]


def test_containers_that_request_nothing_are_named():
    bare = Workload("prometheus", "obs", 2, 2, (Container("prometheus", 0, 0, "chart default"),))

    assert unrequested([API, bare]) == ["prometheus/prometheus"]


def test_a_spot_discount_of_a_whole_is_refused():
    with pytest.raises(ValueError, match="spot discount"):
        month([API], spot_discount=1.0)


def test_the_unit_prices_add_up_to_the_named_instance_price():
    vcpu_hour, gib_hour = node_unit_prices()

    assert NODE_VCPUS * vcpu_hour + NODE_MEMORY_GIB * gib_hour == pytest.approx(NODE_HOURLY_USD)
