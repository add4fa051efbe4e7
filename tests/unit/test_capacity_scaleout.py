"""The scale-out simulator against cases computed by hand from the HPA's documented algorithm."""

from __future__ import annotations

import pytest

from capacity.scaleout import (
    Autoscaler,
    Burst,
    Fleet,
    HpaMemory,
    ScaleEvent,
    Settings,
    average_value_recommendation,
    desired_replicas,
    drain_time,
    reconcile,
    remove_pods,
    scale_down_limit,
    scale_up_limit,
    simulate,
    stabilized,
)
from components.config import ScalingDirection, ScalingPolicy


def up(*policies: ScalingPolicy, select: str = "Max", window: int = 0) -> ScalingDirection:
    return ScalingDirection(stabilization_window_seconds=window, select_policy=select, policies=policies)


def down(*policies: ScalingPolicy, select: str = "Max", window: int = 300) -> ScalingDirection:
    return ScalingDirection(stabilization_window_seconds=window, select_policy=select, policies=policies)


DOUBLE_EVERY_15_S = ScalingPolicy("Percent", 100, 15)
TENTH_A_MINUTE = ScalingPolicy("Percent", 10, 60)


def autoscaler(min_replicas=1, max_replicas=100, target=100, scale_up=None, scale_down=None) -> Autoscaler:
    return Autoscaler(
        min_replicas,
        max_replicas,
        target,
        scale_up or up(DOUBLE_EVERY_15_S),
        scale_down or down(TENTH_A_MINUTE),
    )


def test_two_pods_at_three_times_the_target_want_six():
    assert desired_replicas(2, 3) == 6


def test_a_100_percent_per_15_s_policy_caps_that_step_at_four():
    memory = HpaMemory(replicas=2)

    assert reconcile(autoscaler(target=100), memory, now=15, metric_total=600) == 4
    assert memory.events == [ScaleEvent(15, 2)]


def test_a_pods_policy_beats_a_percent_policy_under_select_policy_max():
    both = up(DOUBLE_EVERY_15_S, ScalingPolicy("Pods", 4, 15))

    assert scale_up_limit(2, [], now=15, up=both) == 6  # 2 + 4 pods, against 2 × 2 = 4


def test_select_policy_min_takes_the_policy_allowing_the_least():
    both = up(DOUBLE_EVERY_15_S, ScalingPolicy("Pods", 4, 15), select="Min")

    assert scale_up_limit(2, [], now=15, up=both) == 4


@pytest.mark.parametrize("ratio", [1.09, 1.05, 0.95, 0.91])
def test_a_metric_within_10_percent_of_its_target_changes_nothing(ratio):
    assert desired_replicas(10, ratio) == 10


def test_a_metric_just_past_the_tolerance_scales():
    assert desired_replicas(10, 1.11) == 12  # ceil(11.1)


def test_scale_down_stabilisation_keeps_the_highest_recommendation_of_its_window():
    window = down(TENTH_A_MINUTE, window=300)
    history = [(0, 8), (60, 6)]

    assert stabilized(10, 3, history, now=120, up=up(DOUBLE_EVERY_15_S), down=window) == 8


def test_a_recommendation_older_than_the_window_no_longer_holds_the_scale():
    window = down(TENTH_A_MINUTE, window=300)

    assert stabilized(10, 3, [(0, 8)], now=301, up=up(DOUBLE_EVERY_15_S), down=window) == 3


def test_a_scale_up_window_keeps_the_lowest_recommendation_of_its_window():
    slow = up(DOUBLE_EVERY_15_S, window=60)

    assert stabilized(4, 20, [(30, 6)], now=60, up=slow, down=down(TENTH_A_MINUTE)) == 6


def test_the_period_counts_from_the_replicas_it_started_with():
    added_this_period = [ScaleEvent(0, 2)]

    assert scale_up_limit(4, added_this_period, now=10, up=up(DOUBLE_EVERY_15_S)) == 4  # started at 2: 2 × 2
    assert scale_up_limit(4, added_this_period, now=15, up=up(DOUBLE_EVERY_15_S)) == 8  # the event is 15 s old


def test_percent_scale_down_rounds_down_and_max_takes_the_biggest_cut():
    both = down(TENTH_A_MINUTE, ScalingPolicy("Pods", 1, 60))

    assert scale_down_limit(15, [], now=0, down=both) == 13  # floor(15 × 0.9) = 13 beats 15 - 1


def test_a_queue_of_50000_messages_at_500_per_pod_wants_100_pods():
    assert average_value_recommendation(5, 50_000, 500, tolerance=0.1) == 100


def test_the_maximum_caps_what_the_queue_wants():
    generous = up(ScalingPolicy("Pods", 1000, 15))

    assert reconcile(autoscaler(max_replicas=80, target=500, scale_up=generous), HpaMemory(5), 15, 50_000) == 80


def test_scale_down_stops_at_the_minimum():
    memory = HpaMemory(replicas=3)

    assert reconcile(autoscaler(min_replicas=2, scale_down=down(TENTH_A_MINUTE, window=0)), memory, 0, 0) == 2


def test_a_constant_rate_drains_a_queue_in_queued_over_net_rate():
    assert drain_time(50_000, arrival_rate=2_000, service_rate=12_000) == 5.0
    assert drain_time(50_000, arrival_rate=12_000, service_rate=12_000) is None


def fleet(name, *, pods, capacity, readiness, target=100, max_replicas=100) -> Fleet:
    return Fleet(name, autoscaler(min_replicas=pods, max_replicas=max_replicas, target=target), capacity, readiness)


INSTANT_METRIC = Settings(api_metric_window_seconds=0, api_metric_lag_seconds=0)


def test_the_simulated_queue_drains_when_the_hand_computation_says():
    # 2 API pods serve the 2,000 requests/s (each one step); 1 worker does 10,000 steps/s: 50,000 / 8,000 = 6.25 s.
    api = fleet("api", pods=2, capacity=1_000, readiness=10, target=1_000)
    workers = fleet("workers", pods=1, capacity=10_000, readiness=10, target=1_000_000)
    burst = Burst(2_000, 2_000, queued_steps=50_000, steps_per_message=1)

    assert simulate(api, workers, burst, INSTANT_METRIC).queue_drained_at == pytest.approx(6.25)


@pytest.mark.parametrize("readiness", [5, 20])
def test_the_readiness_delay_shifts_each_pod_arrival_after_its_sync(readiness):
    # 1 API pod at 400 requests/s against a target of 100: the sync at 15 s doubles it.
    api = fleet("api", pods=1, capacity=1_000, readiness=readiness, target=100, max_replicas=2)
    workers = fleet("workers", pods=1, capacity=10_000, readiness=readiness, target=1_000_000)
    burst = Burst(400, 400, queued_steps=0, steps_per_message=1)

    arrivals = simulate(api, workers, burst, INSTANT_METRIC).arrivals

    assert [(a.time, a.fleet, a.pods, a.ready) for a in arrivals] == [(15 + readiness, "api", 1, 2)]


def test_capacity_meets_the_load_once_enough_new_pods_are_ready():
    # 2,500 requests/s on 1 pod of 1,000 (target 500): the sync at 15 s reads 1,000 answered → 2 pods (ready at 25 s,
    # 2,000/s); the sync at 30 s reads 2,000 → 4 pods, ready at 40 s: 4,000/s.
    api = fleet("api", pods=1, capacity=1_000, readiness=10, target=500)
    workers = fleet("workers", pods=1, capacity=100_000, readiness=10, target=1_000_000)
    burst = Burst(2_500, 1_000, queued_steps=0, steps_per_message=1)

    timeline = simulate(api, workers, burst, INSTANT_METRIC)

    assert [(a.time, a.ready) for a in timeline.arrivals] == [(25, 2), (40, 4)]
    assert timeline.api_capacity_met_at == 40


def test_an_api_saturated_below_its_target_rate_never_scales_on_it():
    # The rate counts answered requests: a pod that answers at most 1,000/s never reads above a 1,000/s target.
    api = fleet("api", pods=1, capacity=1_000, readiness=10, target=1_000)
    workers = fleet("workers", pods=1, capacity=100_000, readiness=10, target=1_000_000)
    burst = Burst(2_500, 1_000, queued_steps=0, steps_per_message=1)

    assert simulate(api, workers, burst, INSTANT_METRIC).api_capacity_met_at is None


def test_a_rate_window_delays_what_the_autoscaler_sees():
    api = fleet("api", pods=1, capacity=1_000, readiness=10, target=500)
    workers = fleet("workers", pods=1, capacity=100_000, readiness=10, target=1_000_000)
    burst = Burst(2_500, 500, queued_steps=0, steps_per_message=1)
    lagging = Settings(api_metric_window_seconds=60, api_metric_lag_seconds=15)

    (first_sync, *_) = [d for d in simulate(api, workers, burst, lagging).decisions if d.fleet == "api"]

    assert (first_sync.metric, first_sync.replicas) == (500, 1)  # the rate over [-60 s, 0]: the steady load


def test_a_scale_down_removes_pods_not_yet_ready_first():
    pending = [(45.0, "api", 2), (45.0, "workers", 1)]
    ready = {"api": 2, "workers": 1}

    remove_pods(3, "api", pending, ready)

    assert (pending, ready) == ([(45.0, "workers", 1)], {"api": 1, "workers": 1})


def test_arrivals_beyond_the_workers_fill_an_empty_queue_and_its_autoscaler_follows():
    # 3,000 steps/s arrive, 1 worker does 1,000. Sync 15 s: 30,000 queued wants 3, the 100% policy allows 2 (ready at
    # 25 s). Sync 30 s: 30,000 + 10 × 2,000 + 5 × 1,000 = 55,000 wants 6, allowed 4 (ready at 40 s: 4,000/s, enough).
    # Sync 45 s: 60,000 wants 6 (ready at 55 s); 50,000 left then drain at 3,000/s net: empty at 55 + 16.67 s.
    api = fleet("api", pods=3, capacity=1_000, readiness=10, target=1_000)
    workers = fleet("workers", pods=1, capacity=1_000, readiness=10, target=10_000)
    burst = Burst(3_000, 3_000, queued_steps=0, steps_per_message=1)

    timeline = simulate(api, workers, burst, INSTANT_METRIC)

    (first_sync, *_) = [d for d in timeline.decisions if d.fleet == "workers"]
    assert (first_sync.metric, first_sync.replicas) == (30_000, 2)
    assert timeline.worker_capacity_met_at == 40
    assert timeline.queue_drained_at == pytest.approx(55 + 50_000 / 3_000)
