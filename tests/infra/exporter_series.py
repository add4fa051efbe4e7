"""The series third-party exporters really export, parsed from their upstream sources.

The sources are the exporters' own files at the versions the platform runs, in ../shared/exporter-metrics (its
README.md says where the names are; SOURCES.txt names each upstream repository, tag and path). Only what no file
there documents is listed by hand below, each with the upstream file or page that documents it.
"""

import fnmatch
import functools
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

EXPORTER_METRICS = Path(__file__).resolve().parents[3] / "shared" / "exporter-metrics"

# The series a histogram's or a summary's samples add to its name.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


@dataclass(frozen=True)
class Source:
    """Where a series is documented: the exporter, its version, and the upstream file (or page)."""

    exporter: str
    version: str
    path: str

    def __str__(self) -> str:
        return f"{self.exporter} {self.version}: {self.path}" if self.version else f"{self.exporter}: {self.path}"


def _with_suffixes(name: str, kind: str) -> list[str]:
    return [name + suffix for suffix in SUFFIXES.get(kind, ("",))]


@functools.cache
def _upstream() -> dict[str, tuple[str, str, list[str]]]:
    """Folder -> (project, tag, upstream paths) from SOURCES.txt, e.g. `redis_exporter: oliver006+redis_exporter@v1.88.0
    (commit) exporter/*.go`."""
    upstream: dict[str, tuple[str, str, list[str]]] = {}
    for line in (EXPORTER_METRICS / "SOURCES.txt").read_text().splitlines():
        match = re.match(r"(\S+): \S+\+(\S+)@(\S+) \(\w+\) (.+)", line)
        if match:
            folder, project, tag, paths = match.groups()
            upstream[folder] = (project, tag, paths.split())
    return upstream


def _source(file: Path) -> Source:
    """The upstream project, tag and path of a file of EXPORTER_METRICS, as SOURCES.txt maps its folder."""
    folder = file.relative_to(EXPORTER_METRICS).parts[0]
    relative = file.relative_to(EXPORTER_METRICS / folder).as_posix()
    project, tag, paths = _upstream()[folder]
    for path in paths:
        base = posixpath.basename(path)
        if base == file.name:
            return Source(project, tag, path)
        if "*" in base and fnmatch.fnmatch(file.name, base):
            return Source(project, tag, posixpath.join(posixpath.dirname(path), relative))
        if "." not in base:  # a folder
            return Source(project, tag, posixpath.join(path, relative))
    return Source(project, tag, relative)


def _table_names(markdown: str) -> list[str]:
    """The metric names of a markdown document's tables: each row's first cell that is a metric name."""
    cells = (line.split("|")[1].strip().strip("`") for line in markdown.splitlines() if line.startswith("|"))
    return [cell for cell in cells if re.fullmatch(r"[a-z_][a-z0-9_]*", cell)]


def _exposition_names(text: str) -> list[str]:
    """The names of the `# TYPE <name> <kind>` lines of a Prometheus exposition quoted in a document or test."""
    return [
        name
        for base, kind in re.findall(r"# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)", text)
        for name in _with_suffixes(base, kind)
    ]


def _go_constants(folder: Path) -> dict[str, str]:
    """The string constants of a Go package (not of its tests, which set their own)."""
    go = "".join(f.read_text() for f in folder.glob("*.go") if not f.name.endswith("_test.go"))
    return dict(re.findall(r"\b(\w+)\s*=\s*\"([^\"]*)\"", go))


def _go_collectors(go: str, constants: dict[str, str]) -> list[str]:
    """The names of a Go file's `prometheus.New<Kind>[Vec|Func]` collectors: Namespace_Subsystem_Name, as
    prometheus.BuildFQName joins them; histograms and summaries with the series their samples add."""
    names = []
    for match in re.finditer(r"prometheus\.New(Gauge|Counter|Histogram|Summary)(?:Vec|Func)?\(", go):
        opts = go[match.end() : go.index("}", match.end())]
        fields = {
            key: value.strip('"') if value.startswith('"') else constants.get(value, "")
            for key, value in re.findall(r"\b(Namespace|Subsystem|Name):\s*(\"[^\"]*\"|[\w.]+)", opts)
        }
        base = "_".join(part for part in (fields.get("Namespace"), fields.get("Subsystem"), fields["Name"]) if part)
        names.extend(_with_suffixes(base, match.group(1).lower()))
    return names


def _rabbitmq() -> dict[str, Source]:
    metrics_md = EXPORTER_METRICS / "rabbitmq" / "metrics.md"
    names = _table_names(metrics_md.read_text())
    series = {name: _source(metrics_md) for name in names}
    # /metrics/detailed (metrics-detailed.md here only points to rabbitmq.com/prometheus.html#detailed-endpoint)
    # serves the per-object families under the prefix rabbitmq_detailed_ instead of rabbitmq_
    # (prometheus_rabbitmq_core_metrics_collector.erl: DETAILED_METRIC_NAME_PREFIX).
    detailed = Source("rabbitmq-server", "", "deps/rabbitmq_prometheus/metrics.md, as /metrics/detailed")
    for name in names:
        per_object = name.startswith(("rabbitmq_queue_", "rabbitmq_channel_", "rabbitmq_connection_"))
        if per_object and not name.startswith("rabbitmq_queue_index_"):  # the node's queue index, not a queue
            series["rabbitmq_detailed_" + name.removeprefix("rabbitmq_")] = detailed
    # metrics.md omits the alarm collector's series.
    alarms = Source(
        "rabbitmq-server", "", "deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_alarm_metrics_collector.erl"
    )
    for alarm in ("file_descriptor_limit", "free_disk_space_watermark", "memory_used_watermark"):
        series[f"rabbitmq_alarms_{alarm}"] = alarms
    return series


def _redis_exporter() -> dict[str, Source]:
    """Names from the metric maps, the metric descriptions and the registerConstMetric* calls with a literal name;
    names built at run time (INFO fields, `config_%s`) are left out. Every name is prefixed by the exporter's
    namespace, `redis` by default."""
    series, histograms = {}, set()
    for go_file in sorted((EXPORTER_METRICS / "redis_exporter").glob("*.go")):
        go, source = go_file.read_text(), _source(go_file)
        names = []
        for block in re.findall(r"metricMap(?:Gauges|Counters): map\[string\]string\{(.*?)\n\t\t\}", go, re.S):
            names += re.findall(r"\"[^\"]+\":\s*\"([^\"]+)\"", block)
        names += re.findall(r"metricMap(?:Gauges|Counters)\[\"[^\"]+\"\]\s*=\s*\"([^\"]+)\"", go)
        names += re.findall(r"^\t\t\"(\w+)\":\s*\{txt:", go, re.M)
        names += re.findall(r"registerConstMetric(?:Gauge)?\(\s*ch,\s*\"(\w+)\"", go)
        for kind, name in re.findall(r"registerConst(Histogram|Summary)\(\s*\w+,\s*\"(\w+)\"", go):
            names += _with_suffixes(name, kind.lower())
            if kind == "Histogram":
                histograms.add(name)
        names += _go_collectors(go, {"opts.Namespace": "redis"})
        for name in names:
            series.setdefault(name if name.startswith("redis_") else f"redis_{name}", source)
    # A histogram's description names its family; its samples are the suffixed series only.
    return {name: source for name, source in series.items() if name.removeprefix("redis_") not in histograms}


def _kube_state_metrics() -> dict[str, Source]:
    return {
        name: _source(doc)
        for doc in sorted((EXPORTER_METRICS / "kube-state-metrics").rglob("*.md"))
        for name in _table_names(doc.read_text())
        if name.startswith("kube_")
    }


def _go_exporter(folder_name: str) -> dict[str, Source]:
    """cert-manager and KEDA: their collectors, and the expositions their tests expect (cert-manager's certificate
    and issuer collectors live outside pkg/metrics; their tests quote what they export)."""
    folder = EXPORTER_METRICS / folder_name
    constants = _go_constants(folder)
    series = {}
    for go_file in sorted(folder.glob("*.go")):
        go = go_file.read_text()
        collectors = [] if go_file.name.endswith("_test.go") else _go_collectors(go, constants)
        for name in collectors + _exposition_names(go):
            series.setdefault(name, _source(go_file))
    return series


def _cloudnative_pg() -> dict[str, Source]:
    folder = EXPORTER_METRICS / "cloudnative-pg"
    monitoring_md = folder / "monitoring.md"
    series = {name: _source(monitoring_md) for name in _exposition_names(monitoring_md.read_text())}
    series = {name: source for name, source in series.items() if name.startswith("cnpg_")}  # not the go_* runtime
    # Each query's COUNTER and GAUGE columns become cnpg_<query name>_<column name> (monitoring.md, "User defined
    # metrics"); `name` overrides the query's or the column's name.
    config = yaml.safe_load((folder / "default-monitoring.yaml").read_text())
    queries = yaml.safe_load(config["data"]["queries"])
    for key, query in queries.items():
        for column in query["metrics"]:
            ((column_name, spec),) = column.items()
            if spec["usage"] in ("COUNTER", "GAUGE"):
                name = f"cnpg_{query.get('name', key)}_{spec.get('name', column_name)}"
                series[name] = _source(folder / "default-monitoring.yaml")
    return series


ENVOY_DOCS = "https://www.envoyproxy.io/docs/envoy/latest/configuration/"
# The Envoy stats the platform reads, named as once their tags are extracted, by the docs page that lists them (no
# file of EXPORTER_METRICS documents them).
# On /stats/prometheus a stat is named envoy_ + its name, dots as underscores, once the default tag extractors
# (source/common/config/well_known_names.cc) moved the cluster name, the connection manager's stat prefix and the
# response code class into labels: cluster.<name>.upstream_rq_5xx becomes
# envoy_cluster_upstream_rq_xx{envoy_cluster_name="<name>",envoy_response_code_class="5"}. Counters keep their
# stat name (no _total is added); histograms add _bucket, _sum and _count.
ENVOY = {
    "upstream/cluster_manager/cluster_stats.html": {
        "cluster.upstream_rq_xx": "counter",
        "cluster.upstream_rq_total": "counter",
        "cluster.upstream_rq_timeout": "counter",
        "cluster.upstream_rq_time": "histogram",
        "cluster.upstream_cx_active": "gauge",
        "cluster.upstream_cx_connect_fail": "counter",
        "cluster.membership_healthy": "gauge",
        "cluster.membership_total": "gauge",
    },
    "http/http_conn_man/stats.html": {
        "http.downstream_rq_xx": "counter",
        "http.downstream_rq_total": "counter",
        "http.downstream_rq_time": "histogram",
        "http.downstream_cx_active": "gauge",
    },
}


# What Prometheus records of every target it scrapes.
PROMETHEUS = {"up": Source("Prometheus", "", "https://prometheus.io/docs/concepts/jobs_instances/")}

# The kubelets' own series and their cAdvisor's, which kube-prometheus-stack's kubelet monitor scrapes.
CADVISOR = Source("cAdvisor", "", "https://github.com/google/cadvisor/blob/master/docs/storage/prometheus.md")
VOLUME_STATS = Source("kubelet", "", "kubernetes/kubernetes: pkg/kubelet/metrics/collectors/volume_stats.go")
KUBELET = {
    "container_cpu_usage_seconds_total": CADVISOR,
    "container_memory_working_set_bytes": CADVISOR,
    "kubelet_volume_stats_available_bytes": VOLUME_STATS,
    "kubelet_volume_stats_capacity_bytes": VOLUME_STATS,
    "kubelet_volume_stats_used_bytes": VOLUME_STATS,
}

PARSERS = {
    "rabbitmq": _rabbitmq,
    "redis_exporter": _redis_exporter,
    "kube-state-metrics": _kube_state_metrics,
    "cert-manager": lambda: _go_exporter("cert-manager"),
    "keda": lambda: _go_exporter("keda"),
    "cloudnative-pg": _cloudnative_pg,
}


@functools.cache
def series_by_exporter() -> dict[str, dict[str, Source]]:
    """Exporter -> every series name it exports -> where that is documented."""
    catalogue = {exporter: parse() for exporter, parse in PARSERS.items()}
    catalogue["envoy"] = {
        name: Source("Envoy", "", ENVOY_DOCS + page)
        for page, stats in ENVOY.items()
        for stat, kind in stats.items()
        for name in _with_suffixes("envoy_" + stat.replace(".", "_"), kind)
    }
    catalogue["prometheus"] = PROMETHEUS
    catalogue["kubelet"] = KUBELET
    return catalogue


@functools.cache
def third_party_series() -> dict[str, Source]:
    """Every series name a third-party exporter exports -> where that is documented."""
    return {name: source for series in series_by_exporter().values() for name, source in series.items()}
