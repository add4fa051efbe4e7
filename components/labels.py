"""The label set every object of the platform carries, and the subset that selects a workload's pods."""

PART_OF = "workflow-platform"


def selector_labels(component: str) -> dict[str, str]:
    """Stable labels that pick out one workload's pods; they must never change once deployed."""
    return {"app.kubernetes.io/name": PART_OF, "app.kubernetes.io/component": component}


def labels(component: str) -> dict[str, str]:
    return {
        **selector_labels(component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }
