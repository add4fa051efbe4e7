"""EdgeIngress: the Gateway API entry (Envoy Gateway) with HTTPS from cert-manager, per-client rate limits and
request size limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.charts import CERT_MANAGER, ENVOY_GATEWAY, VALKEY, install_chart
from components.config import EdgeConfig
from components.interfaces import ScrapeTarget
from components.labels import labels
from components.namespaces import install_addon, platform_namespace
from components.network import RATE_LIMIT_STORE, Flow
from components.ports import CERT_MANAGER_METRICS_PORT, ENVOY_METRICS_PORT, VALKEY_PORT
from components.workload import CONTAINER_SECURITY_CONTEXT, SECCOMP_RUNTIME_DEFAULT

GATEWAY_NAME = "workflow"
# The API's run event stream (app/http/routes/events.py), as Envoy's RE2 matches a whole path.
RUN_EVENTS_PATH = "/v1/runs/[^/]+/events"
ENVOY_PROXY_NAME = "workflow-edge"
ACME_SERVERS = {
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "letsencrypt-production": "https://acme-v02.api.letsencrypt.org/directory",
}
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
# Shorter than the API server's keep-alive (app/__main__.py KEEP_ALIVE_S).
UPSTREAM_IDLE_TIMEOUT = "60s"
RATE_LIMIT_STORE_USERS = f"{RATE_LIMIT_STORE}-users"
# Envoy Gateway gives its shutdown-manager sidecar the Envoy container's securityContext, read-only root included,
# and no volume of its own; it writes /tmp/shutdown-ready when the drain is done.
SHUTDOWN_MANAGER_TMP = "shutdown-manager-tmp"


@dataclass(frozen=True)
class Backend:
    """The Service the Gateway routes to, in the namespace it was created in."""

    namespace: pulumi.Input[str]
    service: pulumi.Input[str]
    port: int


@dataclass(frozen=True)
class EdgeIngressArgs:
    namespace: str
    edge: EdgeConfig
    backend: Backend
    install_cert_manager: bool
    cert_manager_namespace: str
    install_envoy_gateway: bool
    envoy_gateway_namespace: str
    # The platform's flow table: the namespaces created here get their NetworkPolicies from it.
    flows: Sequence[Flow]


class EdgeIngress(pulumi.ComponentResource):
    def __init__(self, name: str, args: EdgeIngressArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("workflow-platform:index:EdgeIngress", name, None, opts)
        # Both proxy containers take the EnvoyProxy's hardened securityContext, and cert-manager's HTTP-01 solver
        # pods are hardened too: nothing here needs more than `restricted`.
        self.namespace = platform_namespace(
            args.namespace, pod_security="restricted", component="edge", flows=args.flows, parent=self
        )
        # The edge's own objects are of the kinds the controllers define.
        after_controllers = pulumi.ResourceOptions(parent=self, depends_on=self._controllers(args))
        gateway = self._gateway(args.edge, after_controllers)
        self._routes(args, after_controllers)
        self._traffic_policies(args.edge, after_controllers)

        self.api_url = f"https://{args.edge.api_host}"
        self.ws_url = f"wss://{args.edge.ws_host}"
        self.gateway_name = gateway.metadata["name"]
        self.scrape_targets = edge_scrape_targets(args)
        self.register_outputs({"api_url": self.api_url, "ws_url": self.ws_url, "gateway_name": self.gateway_name})

    def _controllers(self, args: EdgeIngressArgs) -> list[pulumi.Resource]:
        """Envoy Gateway (with its GatewayClass and the rate limit's store) and cert-manager, where the stack installs
        them."""
        controllers: list[pulumi.Resource] = []
        # Envoy Gateway's chart installs the Gateway API CRDs, which cert-manager (config.gatewayAPI) needs to start.
        gateway_api_crds: list[pulumi.Resource] = []
        if args.install_envoy_gateway:
            envoy_gateway = install_addon(
                ENVOY_GATEWAY,
                namespace=args.envoy_gateway_namespace,
                component="envoy-gateway",
                flows=args.flows,
                parent=self,
                values=envoy_gateway_values(args.envoy_gateway_namespace),
            )
            controllers += [envoy_gateway.installer, self._rate_limit_store(envoy_gateway.namespace)]
            gateway_api_crds.append(envoy_gateway.installer)
            k8s.apiextensions.CustomResource(
                "gateway-class",
                api_version="gateway.networking.k8s.io/v1",
                kind="GatewayClass",
                metadata={"name": args.edge.gateway_class_name, "labels": labels("edge")},
                spec={"controllerName": ENVOY_GATEWAY_CONTROLLER},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[envoy_gateway.installer]),
            )
        if args.install_cert_manager:
            cert_manager = install_addon(
                CERT_MANAGER,
                namespace=args.cert_manager_namespace,
                component="cert-manager",
                flows=args.flows,
                parent=self,
                values=CERT_MANAGER_VALUES,
                depends_on=gateway_api_crds,
            )
            controllers.append(cert_manager.installer)
        return controllers

    def _custom(
        self,
        resource: str,
        api_version: str,
        kind: str,
        spec: dict,
        opts: pulumi.ResourceOptions,
        *,
        namespace: pulumi.Input[str] | None = None,
        **metadata,
    ) -> k8s.apiextensions.CustomResource:
        """One of the edge's objects, named `resource`, in the edge namespace unless `namespace` says otherwise."""
        return k8s.apiextensions.CustomResource(
            resource,
            api_version=api_version,
            kind=kind,
            metadata={
                "name": resource,
                "namespace": namespace if namespace is not None else self.namespace,
                "labels": labels("edge"),
                **metadata,
            },
            spec=spec,
            opts=opts,
        )

    def _gateway(self, edge: EdgeConfig, opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        """The Gateway with its hardened proxies (EnvoyProxy) and the Let's Encrypt issuer of its certificates."""
        self._custom(
            ENVOY_PROXY_NAME,
            "gateway.envoyproxy.io/v1alpha1",
            "EnvoyProxy",
            envoy_proxy_spec(edge.proxy_replicas),
            opts,
        )
        self._custom(
            edge.tls_issuer,
            "cert-manager.io/v1",
            "Issuer",
            {
                "acme": {
                    "server": ACME_SERVERS[edge.tls_issuer],
                    "email": edge.acme_email,
                    "privateKeySecretRef": {"name": f"{edge.tls_issuer}-account-key"},
                    "solvers": [
                        {
                            "http01": {
                                "gatewayHTTPRoute": {
                                    "parentRefs": [{"name": GATEWAY_NAME, "kind": "Gateway", "sectionName": "http"}]
                                }
                            }
                        }
                    ],
                }
            },
            opts,
        )
        return self._custom(
            GATEWAY_NAME,
            "gateway.networking.k8s.io/v1",
            "Gateway",
            {
                "gatewayClassName": edge.gateway_class_name,
                "infrastructure": {
                    "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": ENVOY_PROXY_NAME}
                },
                "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}},
                    *(
                        _https_listener(listener, host)
                        for listener, host in (("api", edge.api_host), ("ws", edge.ws_host))
                    ),
                ],
            },
            opts,
            # cert-manager issues one certificate per HTTPS listener, from the listener's hostname.
            annotations={"cert-manager.io/issuer": edge.tls_issuer},
        )

    def _routes(self, args: EdgeIngressArgs, opts: pulumi.ResourceOptions) -> None:
        """HTTP redirected to HTTPS; the API and WebSocket hosts routed to the API's Service, which a ReferenceGrant in
        its namespace lets these routes reach."""
        edge, backend = args.edge, args.backend
        self._custom(
            "https-redirect",
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            {
                "parentRefs": [{"name": GATEWAY_NAME, "sectionName": "http"}],
                "hostnames": [edge.api_host, edge.ws_host],
                "rules": [
                    {
                        "filters": [
                            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
                        ]
                    }
                ],
            },
            opts,
        )
        backend_ref = {"name": backend.service, "namespace": backend.namespace, "port": backend.port}
        everything = {"path": {"type": "PathPrefix", "value": "/"}}
        # Run event streams are long-lived WebSockets, so no request timeout on them: the whole `ws` host, and on the
        # `api` host the streams the console opens on its own origin.
        streaming = {"timeouts": {"request": "0s"}}
        for route, host, rules in (
            (
                "api",
                edge.api_host,
                [
                    {"matches": [{"path": {"type": "RegularExpression", "value": RUN_EVENTS_PATH}}], **streaming},
                    {"matches": [everything]},
                ],
            ),
            ("ws", edge.ws_host, [{"matches": [everything], **streaming}]),
        ):
            self._custom(
                route,
                "gateway.networking.k8s.io/v1",
                "HTTPRoute",
                {
                    "parentRefs": [{"name": GATEWAY_NAME, "sectionName": f"https-{route}"}],
                    "hostnames": [host],
                    "rules": [{**rule, "backendRefs": [backend_ref]} for rule in rules],
                },
                opts,
            )
        # The API's Service lives in the app namespace: routes from here may reach it, and nothing else may.
        self._custom(
            "edge-routes",
            "gateway.networking.k8s.io/v1",
            "ReferenceGrant",
            {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": args.namespace}],
                "to": [{"group": "", "kind": "Service", "name": backend.service}],
            },
            opts,
            namespace=backend.namespace,
        )

    def _traffic_policies(self, edge: EdgeConfig, opts: pulumi.ResourceOptions) -> None:
        """The per-client rate limit on both routes, the API's request body limit, and the clients' TLS and timeouts."""
        # The API answers requests; its body size is capped by buffering, which WebSockets cannot go through.
        self._custom(
            "api",
            "gateway.envoyproxy.io/v1alpha1",
            "BackendTrafficPolicy",
            {
                **_route_target("api"),
                "rateLimit": _per_client_rate_limit(edge.rate_limit_per_client),
                "requestBuffer": {"limit": edge.max_request_body_size},
                # Envoy closes an idle connection to the API before the API would (its keep-alive is longer), so
                # a request never goes out on a connection the API is closing at that moment.
                "timeout": {"http": {"connectionIdleTimeout": UPSTREAM_IDLE_TIMEOUT}},
            },
            opts,
        )
        self._custom(
            "ws",
            "gateway.envoyproxy.io/v1alpha1",
            "BackendTrafficPolicy",
            {**_route_target("ws"), "rateLimit": _per_client_rate_limit(edge.rate_limit_per_client)},
            opts,
        )
        self._custom(
            GATEWAY_NAME,
            "gateway.envoyproxy.io/v1alpha1",
            "ClientTrafficPolicy",
            {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}],
                "tls": {"minVersion": "1.2"},
                "headers": {"withUnderscoresAction": "RejectRequest"},
                "timeout": {"http": {"requestReceivedTimeout": "30s", "idleTimeout": "300s"}},
            },
            opts,
        )

    def _rate_limit_store(self, namespace: pulumi.Input[str]) -> pulumi.Resource:
        """The Valkey that holds the global rate limit's counters, with a generated password for its default user."""
        password = random.RandomPassword(
            f"{RATE_LIMIT_STORE}-password", length=40, special=False, opts=pulumi.ResourceOptions(parent=self)
        ).result
        users = k8s.core.v1.Secret(
            RATE_LIMIT_STORE_USERS,
            metadata={"name": RATE_LIMIT_STORE_USERS, "namespace": namespace, "labels": labels("envoy-gateway")},
            string_data={"default": password},
            opts=pulumi.ResourceOptions(parent=self),
        )
        return install_chart(
            VALKEY,
            namespace,
            RATE_LIMIT_STORE_VALUES,
            pulumi.ResourceOptions(parent=self, depends_on=[users]),
            release_name=RATE_LIMIT_STORE,
        )


def edge_scrape_targets(args: EdgeIngressArgs) -> tuple[ScrapeTarget, ...]:
    """The Gateway's Envoy proxies (envoy_*) and, where the stack installs it, cert-manager's controller
    (certmanager_*)."""
    # Envoy Gateway labels the proxies of a Gateway so, and serves their stats on container port `metrics` (19001,
    # /stats/prometheus) unless the EnvoyProxy disables Prometheus (gateway v1.9.0:
    # internal/infrastructure/kubernetes/proxy/testdata/deployments/gateway-namespace-mode.yaml).
    proxies = {
        "app.kubernetes.io/name": "envoy",
        "app.kubernetes.io/component": "proxy",
        "gateway.envoyproxy.io/owning-gateway-name": GATEWAY_NAME,
    }
    targets = [
        ScrapeTarget(
            "envoy-proxies",
            args.namespace,
            proxies,
            "metrics",
            ENVOY_METRICS_PORT,
            via_service=False,
            path="/stats/prometheus",
        )
    ]
    if args.install_cert_manager:
        # With prometheus.enabled (the chart's default) the chart's Service `cert-manager` serves the controller's
        # metrics on port `http-metrics`; the monitor is Observability's, like every other, so this chart never
        # needs the monitoring CRDs.
        targets.append(
            ScrapeTarget(
                "cert-manager",
                args.cert_manager_namespace,
                {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/component": "controller"},
                "http-metrics",
                CERT_MANAGER_METRICS_PORT,
            )
        )
    return tuple(targets)


def _https_listener(name: str, host: str) -> dict:
    return {
        "name": f"https-{name}",
        "protocol": "HTTPS",
        "port": 443,
        "hostname": host,
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": f"{name}-tls"}]},
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    }


def _route_target(route: str) -> dict:
    return {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}]}


def _per_client_rate_limit(requests_per_second: int) -> dict:
    """One counter per client address, kept by the rate-limit service that every Envoy replica asks (global), so
    the limit holds whatever the replica count; one rule per address family, so IPv6 clients are limited too."""
    return {
        "global": {
            "rules": [
                {
                    "clientSelectors": [{"sourceCIDR": {"type": "Distinct", "value": cidr}}],
                    "limit": {"requests": requests_per_second, "unit": "Second"},
                }
                for cidr in ("0.0.0.0/0", "::/0")
            ]
        }
    }


def envoy_proxy_spec(replicas: int) -> dict:
    return {
        "provider": {
            "type": "Kubernetes",
            "kubernetes": {
                "envoyDeployment": {
                    "replicas": replicas,
                    "container": {
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"cpu": "2", "memory": "1Gi"},
                        },
                        "securityContext": {
                            key: value
                            for key, value in CONTAINER_SECURITY_CONTEXT.items()
                            if key not in ("runAsUser", "runAsGroup")
                        },
                    },
                    "pod": {
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": SECCOMP_RUNTIME_DEFAULT},
                        "volumes": [
                            {"name": SHUTDOWN_MANAGER_TMP, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
                        ],
                    },
                    # The EnvoyProxy API mounts volumes into the Envoy container only; the sidecar needs a patch.
                    "patch": {
                        "type": "StrategicMerge",
                        "value": {
                            "spec": {
                                "template": {
                                    "spec": {
                                        "containers": [
                                            {
                                                "name": "shutdown-manager",
                                                "volumeMounts": [{"name": SHUTDOWN_MANAGER_TMP, "mountPath": "/tmp"}],
                                            }
                                        ]
                                    }
                                }
                            }
                        },
                    },
                },
                "envoyPDB": {"maxUnavailable": 1},
                # Local keeps the client's source address, which per-client rate limits key on.
                "envoyService": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            },
        }
    }


CERT_MANAGER_VALUES = {
    "crds": {"enabled": True, "keep": True},
    "config": {
        "apiVersion": "controller.config.cert-manager.io/v1alpha1",
        "kind": "ControllerConfiguration",
        "gatewayAPI": {"enabled": True},
    },
    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    # The chart requests nothing for these by default. The CA injector caches the cluster's webhook configurations,
    # CRDs and certificate Secrets; the webhook only validates and converts cert-manager's own resources.
    "cainjector": {
        "resources": {"requests": {"cpu": "20m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "512Mi"}}
    },
    "webhook": {
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
    },
}

_RATE_LIMIT_UID = 65534  # the user Envoy Gateway runs its rate-limit container as by default


def envoy_gateway_values(namespace: str) -> dict:
    return {
        "config": {
            "envoyGateway": {
                "provider": {
                    "type": "Kubernetes",
                    "kubernetes": {
                        # Proxies run beside their Gateway, so the edge namespace's policies govern them.
                        "deploy": {"type": "GatewayNamespace"},
                        # The Redis backend has no password field; the rate-limit service reads one from REDIS_AUTH.
                        # Hardened here rather than left to Envoy Gateway's defaults: its namespace is `restricted`.
                        "rateLimitDeployment": {
                            "container": {
                                "env": [
                                    {
                                        "name": "REDIS_AUTH",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": RATE_LIMIT_STORE_USERS, "key": "default"}
                                        },
                                    }
                                ],
                                "securityContext": {
                                    **CONTAINER_SECURITY_CONTEXT,
                                    "runAsUser": _RATE_LIMIT_UID,
                                    "runAsGroup": _RATE_LIMIT_UID,
                                },
                            },
                            "pod": {
                                "securityContext": {"runAsNonRoot": True, "seccompProfile": SECCOMP_RUNTIME_DEFAULT}
                            },
                        },
                    },
                },
                "rateLimit": {
                    "backend": {
                        "type": "Redis",
                        "redis": {"url": f"{RATE_LIMIT_STORE}.{namespace}.svc.cluster.local:{VALKEY_PORT}"},
                    }
                },
            }
        },
    }


_VALKEY_UID = 1000  # the chart's default user; its init script and data directory expect it
# A counter lives one window (a second): no persistence, nothing saved; when full, counters nearest expiry go first.
RATE_LIMIT_STORE_VALUES = {
    "fullnameOverride": RATE_LIMIT_STORE,
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
    "initResources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    "valkeyConfig": 'save ""\nappendonly no\nmaxmemory 96mb\nmaxmemory-policy volatile-ttl\n',
    "dataStorage": {"enabled": False},
    "auth": {
        "enabled": True,
        "usersExistingSecret": RATE_LIMIT_STORE_USERS,
        "aclUsers": {"default": {"permissions": "~* &* +@all"}},
    },
    "podSecurityContext": {
        "runAsNonRoot": True,
        "runAsUser": _VALKEY_UID,
        "runAsGroup": _VALKEY_UID,
        "fsGroup": _VALKEY_UID,
        "seccompProfile": SECCOMP_RUNTIME_DEFAULT,
    },
    "securityContext": {**CONTAINER_SECURITY_CONTEXT, "runAsUser": _VALKEY_UID, "runAsGroup": _VALKEY_UID},
    "metrics": {"enabled": False},
}
