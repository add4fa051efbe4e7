"""The program satisfies its own policy pack: every policy of `policy/`, called through pulumi-policy's argument
types as the engine calls it, finds no violation in any resource of any stack."""

from __future__ import annotations

import runpy

import pytest
from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs

from policy.validators import Resource
from tools.mock_stack import ROOT, reveal

# Loaded as Pulumi loads the directory, without starting the pack's server.
POLICIES = {
    policy.name: policy for policy in runpy.run_path(str(ROOT / "policy"), run_name="policy_under_test")["policies"]()
}


def stack_resources(run) -> list[Resource]:
    """What the pack is shown: each resource's inputs with secrets revealed, as pulumi-policy hands them over."""
    return [Resource(r.type, reveal(r.inputs), r.urn) for r in run.resources]


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_the_stack_satisfies_the_policy(stack, policy_name):
    policy = POLICIES[policy_name]
    resources = stack_resources(stack)
    violations = []

    if isinstance(policy, ResourceValidationPolicy):
        for resource in resources:
            args = ResourceValidationArgs(
                resource.resource_type, resource.props, resource.urn, resource.urn.split("::")[-1], None, None
            )
            policy.validate(args, lambda message, at=None, where=resource.urn: violations.append((where, message)))
    else:
        policy.validate(StackValidationArgs(resources), lambda message, at=None: violations.append((at, message)))

    assert violations == []


def test_the_pack_sees_the_workloads_of_every_stack(stack):
    kinds = {resource.resource_type for resource in stack_resources(stack)}

    assert {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:batch/v1:Job",
        "kubernetes:policy/v1:PodDisruptionBudget",
    } <= kinds
