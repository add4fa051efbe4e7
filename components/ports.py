"""The ports the platform's pods serve and call, in one place: the components listen on them and the flow table
(components/network.py) admits exactly them."""

# The app: the API's HTTP port, and the workers' health and metrics port.
API_PORT = 8000
WORKER_METRICS_PORT = 9100

# The data services, their exporters, and what their operators call.
POSTGRES_PORT = 5432
AMQP_PORT = 5672
VALKEY_PORT = 6379
POSTGRES_METRICS_PORT = 9187
RABBITMQ_METRICS_PORT = 15692
VALKEY_METRICS_PORT = 9121
POSTGRES_STATUS_PORT = 8000
RABBITMQ_MANAGEMENT_PORT = 15672

# Jaeger's OTLP receivers.
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318

# Envoy Gateway maps privileged listener ports to container port + 10000.
EDGE_HTTP_CONTAINER_PORT = 10080
EDGE_HTTPS_CONTAINER_PORT = 10443
ENVOY_XDS_PORT = 18000
ENVOY_METRICS_PORT = 19001
# Global rate limit: the proxies ask Envoy Gateway's rate-limit service (gRPC), which takes its rules from the
# controller's xDS server.
RATE_LIMIT_GRPC_PORT = 8081
RATE_LIMIT_XDS_PORT = 18001

# Add-ons: the webhooks and APIs the Kubernetes API server calls.
OPERATOR_WEBHOOK_PORT = 9443
CERT_MANAGER_WEBHOOK_PORT = 10250
PROMETHEUS_OPERATOR_WEBHOOK_PORT = 10250
KEDA_METRICS_API_PORT = 6443
# metrics-server's secure port (its chart's `containerPort`), which the API server calls for metrics.k8s.io.
METRICS_SERVER_PORT = 10250

KUBELET_PORT = 10250

# Monitoring: kube-prometheus-stack's Prometheus Service, which KEDA queries; the add-ons' own metrics ports.
PROMETHEUS_PORT = 9090
# The KEDA chart's `prometheus.operator.port`: where its operator serves the keda_* series.
KEDA_OPERATOR_METRICS_PORT = 8080
# Where the cert-manager chart's Service `http-metrics` (templates/service.yaml) serves the controller's certmanager_*.
CERT_MANAGER_METRICS_PORT = 9402
