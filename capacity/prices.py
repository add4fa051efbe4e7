"""What the platform's resources cost: AWS us-east-1 (N. Virginia) on-demand list prices, read 2026-11-27.

Every figure names the page it was read from. AWS's own price pages did not come up in the search index used, so
some figures are cited from pages that quote them; each comment says which. The prices change: re-read them (and
`PRICES_READ_ON`) before trusting a figure to the dollar.
"""

from __future__ import annotations

from dataclasses import dataclass

REGION = "AWS us-east-1 (N. Virginia), on-demand, Linux"
PRICES_READ_ON = "2026-11-27"
HOURS_PER_MONTH = 730  # AWS's own convention in its pricing examples: 24 × 365 / 12

# The instance family the nodes run on, and the named type the per-unit prices are derived from.
# $0.192/hour for m5.xlarge (4 vCPU, 16 GiB) in us-east-1: quoted by
# https://kindatechnical.com/aws-eks/lesson-31-understanding-eks-pricing.html ("m5.xlarge: $0.192 per hour").
NODE_INSTANCE_TYPE = "m5.xlarge"
NODE_VCPUS = 4
NODE_MEMORY_GIB = 16
NODE_HOURLY_USD = 0.192

# An instance price is one figure; requests are CPU and memory. The split follows AWS's own per-unit prices for the
# same kind of capacity, Fargate Linux/x86 in us-east-1: $0.04048 per vCPU-hour and $0.004445 per GB-hour, quoted by
# https://www.vantage.sh/blog/fargate-pricing (and https://www.wring.co/blog/aws-fargate-pricing-guide).
# Only their ratio is used: the m5.xlarge price is divided between its 4 vCPUs and 16 GiB in that proportion.
FARGATE_VCPU_HOUR_USD = 0.04048
FARGATE_GB_HOUR_USD = 0.004445

# gp3 volumes: $0.08 per GB-month of provisioned storage in us-east-1 (3,000 IOPS and 125 MB/s included), quoted by
# AWS's own https://github.com/aws/agent-toolkit-for-aws (skills/.../aws-billing-and-cost-management/references/
# ebs-optimization.md: "$0.08 vs $0.10 in us-east-1"). EBS's "GB" is the binary GiB a claim asks for.
GP3_GB_MONTH_USD = 0.08
# Every node's root volume: EKS managed node groups default to a 20 GiB disk.
NODE_ROOT_VOLUME_GIB = 20

# Network Load Balancer: $0.0225 per hour and $0.006 per NLCU-hour in us-east-1, quoted by
# https://clustercost.com/blog/network-load-balancer-pricing-2025 and https://awsnegotiations.com/elastic-load-balancer-cost.html.
NLB_HOURLY_USD = 0.0225
NLB_LCU_HOURLY_USD = 0.006
# Assumed average NLCUs: one NLCU is 800 new TCP flows/s, 100,000 active flows or 1 GB/hour processed, more than
# these environments' steady traffic; a busier month scales this line with its traffic.
NLB_AVERAGE_LCUS = 1

# The managed control plane: Amazon EKS, $0.10 per cluster-hour in standard support, stated by AWS in
# https://aws.amazon.com/blogs/containers/amazon-eks-extended-support-for-kubernetes-versions-pricing/
# ("you will continue to pay $0.10 per cluster per hour"; $0.60 in extended support).
CONTROL_PLANE_HOURLY_USD = 0.10

# Requests never fill nodes: kubelet and system reservations, DaemonSets and the gaps left by pods that do not fit
# (spreading, anti-affinity) leave about a fifth of a node unrequested. Compute is charged at requests × this.
BIN_PACKING_OVERHEAD = 1.25


@dataclass(frozen=True)
class Prices:
    vcpu_hour: float
    gib_hour: float
    gib_month_storage: float
    node_root_volume_gib: int
    load_balancer_hour: float
    control_plane_hour: float
    bin_packing_overhead: float
    node_vcpus: int
    node_memory_gib: int


def node_unit_prices() -> tuple[float, float]:
    """(per vCPU-hour, per GiB-hour) of the node type: its price split in Fargate's vCPU-to-GB price ratio."""
    gib_hour = NODE_HOURLY_USD / (NODE_VCPUS * FARGATE_VCPU_HOUR_USD / FARGATE_GB_HOUR_USD + NODE_MEMORY_GIB)
    return gib_hour * FARGATE_VCPU_HOUR_USD / FARGATE_GB_HOUR_USD, gib_hour


def us_east_1() -> Prices:
    vcpu_hour, gib_hour = node_unit_prices()
    return Prices(
        vcpu_hour=vcpu_hour,
        gib_hour=gib_hour,
        gib_month_storage=GP3_GB_MONTH_USD,
        node_root_volume_gib=NODE_ROOT_VOLUME_GIB,
        load_balancer_hour=NLB_HOURLY_USD + NLB_AVERAGE_LCUS * NLB_LCU_HOURLY_USD,
        control_plane_hour=CONTROL_PLANE_HOURLY_USD,
        bin_packing_overhead=BIN_PACKING_OVERHEAD,
        node_vcpus=NODE_VCPUS,
        node_memory_gib=NODE_MEMORY_GIB,
    )
