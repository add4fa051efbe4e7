"""The namespaces a stack creates, and the cluster add-ons installed into them, each made the same way.

A namespace enforces a Pod Security Standard level and carries its NetworkPolicies from the platform's flow table:
whoever creates a namespace creates its policies, so no component renders another's. An add-on is a namespace of its
own plus what installs it (a pinned Helm chart, or a release manifest that brings its namespace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.charts import HelmChart, ReleaseManifest, install_chart
from components.labels import labels
from components.network import Flow, policies_for


def platform_namespace(
    name: str,
    *,
    pod_security: str,
    component: str,
    flows: Sequence[Flow],
    parent: pulumi.Resource,
    aliases: Sequence[pulumi.Alias] = (),
) -> pulumi.Output[str]:
    """Creates namespace `name` enforcing `pod_security` (`restricted` unless its pods need more), with its
    NetworkPolicies; returns its name as an output, so what is created in it waits for it. `aliases` name where the
    namespace and its policies were created before, so a deployed stack moves them rather than creating them again."""
    created = k8s.core.v1.Namespace(
        name,
        metadata={
            "name": name,
            "labels": {
                **labels(component),
                "kubernetes.io/metadata.name": name,
                "pod-security.kubernetes.io/enforce": pod_security,
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
        opts=pulumi.ResourceOptions(parent=parent, aliases=list(aliases)),
    ).metadata.name
    policies_for(name, created, flows, parent, aliases)
    return created


@dataclass(frozen=True)
class InstalledAddOn:
    # The add-on's namespace, as an output: what runs in it waits for it.
    namespace: pulumi.Output[str]
    # The chart or manifest: whatever uses the kinds it defines waits for it.
    installer: pulumi.Resource
    # The Secrets created for its chart to read, by name.
    secret_names: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)


def install_addon(
    source: HelmChart | ReleaseManifest,
    *,
    namespace: str,
    component: str,
    flows: Sequence[Flow],
    parent: pulumi.Resource,
    values: dict | None = None,
    pod_security: str = "restricted",
    secrets: Mapping[str, Mapping[str, pulumi.Input[str]]] | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
    aliases: Sequence[pulumi.Alias] = (),
) -> InstalledAddOn:
    """Installs a cluster add-on into `namespace`, with that namespace's NetworkPolicies.

    For a chart, the namespace is created first, enforcing `pod_security` and labelled for `component` (see
    `platform_namespace`); then `secrets` in it (Secret name -> data, for values that name them); then the chart, after
    those and `depends_on`. A release manifest creates its own namespace, which must be `namespace`, with its own
    labels: only the policies are ours. `aliases` name the component that installed the add-on before, if another did.
    """
    if isinstance(source, ReleaseManifest):
        if namespace != source.namespace or secrets:
            raise ValueError(
                f"{source.name} runs in the namespace it creates, {source.namespace}, with no Secret of ours"
            )
        # v2.ConfigFile renders every object of the manifest, its own namespace included, into previews.
        manifest = k8s.yaml.v2.ConfigFile(
            source.name, file=source.url, opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on))
        )
        created = manifest.resources.apply(lambda _: source.namespace)
        policies_for(namespace, created, flows, parent)
        return InstalledAddOn(created, manifest)
    created = platform_namespace(
        namespace, pod_security=pod_security, component=component, flows=flows, parent=parent, aliases=aliases
    )
    read_by_chart = {
        secret: k8s.core.v1.Secret(
            secret,
            metadata={"name": secret, "namespace": created, "labels": labels(component)},
            string_data=data,
            opts=pulumi.ResourceOptions(parent=parent, aliases=list(aliases)),
        )
        for secret, data in (secrets or {}).items()
    }
    chart = install_chart(
        source,
        created,
        values or {},
        pulumi.ResourceOptions(parent=parent, depends_on=[*read_by_chart.values(), *depends_on], aliases=list(aliases)),
    )
    return InstalledAddOn(created, chart, {name: secret.metadata.name for name, secret in read_by_chart.items()})
