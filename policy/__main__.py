"""The platform's policy pack (Pulumi CrossGuard): `pulumi preview --policy-pack policy` and `pulumi up --policy-pack
policy` refuse a change that breaks one of the platform's invariants, whoever wrote the program.

Every policy is mandatory. The workload policies (pod security, requests and limits, probes, pinned images,
disruption budgets) judge what the program declares itself; the children of Helm charts and release manifests follow
their chart, which tests/infra/test_charts.py checks. The LoadBalancer and credential policies judge everything.

Pulumi runs this directory with `runpy.run_path` (`python -m pulumi.policy`), which puts it on sys.path: hence the
plain `import validators`. `PolicyPack` serves the engine and never returns, so it starts only when run as
`__main__`; the tests load `policies()` without it.

Config (`--policy-pack-config`): `images-pinned-by-digest` takes `allowUnpinnedImagesInStacks` (default ["dev"]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import validators
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PACK_NAME = "workflow-platform"


def resource_policy(
    name: str,
    validator: Callable[[str, Mapping[str, Any], validators.Report], None],
    *,
    own_resources_only: bool,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if own_resources_only and validators.rendered_from_third_party(args.urn):
            return
        validator(args.resource_type, args.props, report_violation)

    return ResourceValidationPolicy(name=name, description=_summary(validator), validate=validate)


def pinned_images(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if validators.rendered_from_third_party(args.urn):
        return
    validators.images_pinned_by_digest(
        args.resource_type,
        args.props,
        report_violation,
        stack=validators.stack_of(args.urn),
        unpinned_allowed_in=args.get_config().get(
            validators.UNPINNED_IMAGES_CONFIG, validators.DEFAULT_UNPINNED_STACKS
        ),
    )


def disruption_budgets(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    own = [r for r in args.resources if not validators.rendered_from_third_party(r.urn)]
    validators.every_deployment_has_a_disruption_budget(own, report_violation)


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [
        resource_policy("restricted-pod-security", validators.restricted_pod_security, own_resources_only=True),
        resource_policy("requests-and-limits", validators.requests_and_limits, own_resources_only=True),
        resource_policy("liveness-and-readiness-probes", validators.probes, own_resources_only=True),
        ResourceValidationPolicy(
            name="images-pinned-by-digest",
            description=_summary(validators.images_pinned_by_digest),
            validate=pinned_images,
            config_schema=PolicyConfigSchema(
                properties={
                    validators.UNPINNED_IMAGES_CONFIG: {
                        "type": "array",
                        "items": {"type": "string"},
                        "default": list(validators.DEFAULT_UNPINNED_STACKS),
                    }
                }
            ),
        ),
        StackValidationPolicy(
            name="disruption-budget-for-every-deployment",
            description=_summary(validators.every_deployment_has_a_disruption_budget),
            validate=disruption_budgets,
        ),
        resource_policy("no-load-balancer-service", validators.no_load_balancer_service, own_resources_only=False),
        resource_policy("no-plain-text-credentials", validators.no_plain_text_credentials, own_resources_only=False),
    ]


def _summary(validator: Callable[..., None]) -> str:
    """The validator's docstring, on one line: what a violation's reader is shown."""
    return " ".join((validator.__doc__ or validator.__name__).split())


if __name__ == "__main__":
    PolicyPack(PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
