"""The workflow platform: one stack per environment, composed from five components.

Everything a stack differs in comes from its Pulumi.<stack>.yaml, read and validated by components.config. The
components never import each other: what one needs of another is handed over here, through its args.
"""

import pulumi

from capacity.workloads import monthly
from components import config
from components.app_tier import AppTier, AppTierArgs
from components.data_plane import DataPlane, DataPlaneArgs
from components.edge_ingress import Backend, EdgeIngress, EdgeIngressArgs
from components.interfaces import Connections
from components.network import PlatformNamespaces, platform_flows
from components.observability import Observability, ObservabilityArgs, otlp_endpoint, prometheus_url
from components.worker_pool import WorkerPool, WorkerPoolArgs

stack = config.load()
namespaces = PlatformNamespaces()
# Every connection the platform makes: each component renders the policies of the namespaces it creates from it.
flows = tuple(platform_flows(namespaces, stack.workers.egress_cidrs))

data = DataPlane(
    "data",
    DataPlaneArgs(
        namespace=namespaces.data,
        postgres=stack.postgres,
        rabbitmq=stack.rabbitmq,
        redis=stack.redis,
        storage_class=stack.storage_class,
        install_cloudnative_pg=stack.installs("cloudnative-pg"),
        cloudnative_pg_namespace=namespaces.cloudnative_pg,
        install_rabbitmq_operator=stack.installs("rabbitmq-cluster-operator"),
        rabbitmq_operator_namespace=namespaces.rabbitmq_operator,
        flows=flows,
    ),
)

app = AppTier(
    "app",
    AppTierArgs(
        namespace=namespaces.app,
        api=stack.api,
        engine=stack.engine,
        image=stack.image,
        build_context="app",
        connections=data.connections,
        otlp_endpoint=otlp_endpoint(namespaces.observability),
        database_ready=data.postgres_ready,
        broker_ready=data.broker_ready,
        install_keda=stack.installs("keda"),
        keda_namespace=namespaces.keda,
        install_metrics_server=stack.installs("metrics-server"),
        metrics_server_namespace=namespaces.metrics_server,
        prometheus_url=prometheus_url(namespaces.observability),
        install_argo_rollouts=stack.installs("argo-rollouts"),
        argo_rollouts_namespace=namespaces.argo_rollouts,
        flows=flows,
    ),
)

workers = WorkerPool(
    "workers",
    WorkerPoolArgs(
        namespace=app.namespace,
        workers=stack.workers,
        image_ref=app.image_ref,
        runtime_env=app.runtime_env,
        connection_files=app.connection_files,
        connection_secret_name=app.connection_secret_name,
        amqp_url_key=Connections.AMQP_URL_KEY,
        autoscaler_ready=app.autoscaler_ready,
        ready=[*app.schema_ready, *data.broker_ready],
    ),
)

edge = EdgeIngress(
    "edge",
    EdgeIngressArgs(
        namespace=namespaces.edge,
        edge=stack.edge,
        backend=Backend(namespace=app.namespace, service=app.service_name, port=app.service_port),
        install_cert_manager=stack.installs("cert-manager"),
        cert_manager_namespace=namespaces.cert_manager,
        install_envoy_gateway=stack.installs("envoy-gateway"),
        envoy_gateway_namespace=namespaces.envoy_gateway,
        flows=flows,
    ),
)

observability = Observability(
    "observability",
    ObservabilityArgs(
        namespace=namespaces.observability,
        stack=pulumi.get_stack(),
        config=stack.observability,
        storage_class=stack.storage_class,
        install_prometheus_stack=stack.installs("kube-prometheus-stack"),
        scrape_targets=(*app.scrape_targets, *workers.scrape_targets, *data.scrape_targets, *edge.scrape_targets),
        flows=flows,
    ),
)

pulumi.export("apiUrl", edge.api_url)
pulumi.export("webSocketUrl", edge.ws_url)
pulumi.export("imageRef", app.image_ref)
pulumi.export("appNamespace", app.namespace)
pulumi.export("bootstrapApiKeySecret", app.bootstrap_key_secret_name)
pulumi.export("grafanaAdminSecret", observability.grafana_admin_secret_name)
# What the stack's pods request, its volumes and its load balancer cost a month (`make capacity` for the breakdown).
cost_at_min, cost_at_max = monthly(stack)
pulumi.export("monthlyCostUsd", {"min": round(cost_at_min.total, 2), "max": round(cost_at_max.total, 2)})
