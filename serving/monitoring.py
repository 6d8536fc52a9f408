"""The local server's Prometheus metrics (TF Serving's names and labels, plus per-version ones)
and --monitoring_config_file, rendered as TF Serving's util/prometheus_exporter.cc does."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.config_protos import MonitoringConfig, parse_text_file

# util/prometheus_exporter.cc PrometheusExporter::kPrometheusPath.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def prometheus_path(monitoring_config_file: str | None) -> str | None:
    """The path the metrics are served at, or None when the MonitoringConfig does not enable
    Prometheus (http_server.cc CreateAndStartHttpServer: an empty path means the default)."""
    if not monitoring_config_file:
        return None
    config = parse_text_file(monitoring_config_file, MonitoringConfig).prometheus_config
    if not config.enable:
        return None
    return config.path or DEFAULT_PROMETHEUS_PATH


def _exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """tsl monitoring Buckets::Exponential: scale, scale*growth, ... (count limits), by repeated
    multiplication as there, so the limits are the same doubles."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return limits


# servables/tensorflow/util.cc request_latency: microseconds, "Scale of 10, power of 1.8 with
# bucket count 33 (~20 minutes)".
LATENCY_BUCKETS_MICROS = _exponential_buckets(10, 1.8, 33)


class ServingMetrics:
    """One per LocalServer, each on its own CollectorRegistry (not prometheus_client's global
    one), so servers in one process never count each other's requests."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)
        # servables/tensorflow/util.cc: model_request_status_count_total and request_latency.
        self.request_count = Counter(":tensorflow:serving:request_count", "The total number of requests.",
                                     ["model_name", "status"], registry=self.registry)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_MICROS, registry=self.registry)
        # Beyond TF Serving: the same by version, and the registry's load/unload events.
        self.version_request_count = Counter(
            ":transfer_serve:request_count", "Requests by model version, API, entrypoint and status.",
            ["model_name", "version", "API", "entrypoint", "status"], registry=self.registry)
        self.version_request_latency = Histogram(
            ":transfer_serve:request_latency", "Wall time (in microseconds) of successful requests by version.",
            ["model_name", "version", "API", "entrypoint"], buckets=LATENCY_BUCKETS_MICROS, registry=self.registry)
        self.load_attempt_count = Counter(
            ":transfer_serve:model_load_attempt_count", "Load attempts of a model version, by status.",
            ["model_name", "version", "status"], registry=self.registry)
        self.unload_count = Counter(":transfer_serve:model_unload_count", "Unloads of a model version.",
                                    ["model_name", "version", "status"], registry=self.registry)

    def record_request(self, model_name: str, version, api: str, entrypoint: str, status: str,
                       started: float) -> None:
        """One answered request; `started` is its time.perf_counter() on arrival. As TF Serving
        (prediction_service_impl.cc, http_server.cc), the latency counts successful requests only."""
        micros = (time.perf_counter() - started) * 1e6
        version_text = str(version) if version else ""
        self.request_count.labels(model_name, status).inc()
        self.version_request_count.labels(model_name, version_text, api, entrypoint, status).inc()
        if status == "OK":
            self.request_latency.labels(model_name, api, entrypoint).observe(micros)
            self.version_request_latency.labels(model_name, version_text, api, entrypoint).observe(micros)

    def on_model_event(self, model_name: str, version: int, event: str, status: str) -> None:
        """ModelRegistry's on_event: event "load" or "unload", status "OK" or a canonical code name."""
        counter = self.load_attempt_count if event == "load" else self.unload_count
        counter.labels(model_name, str(version), status).inc()

    def counter_value(self, tf_name: str) -> int:
        """The first point of a counter named as TF's monitoring names it ("/tensorflow/serving/
        request_count"), 0 if there is none: what model_service_impl.cc GetMetrics reads."""
        wanted = tf_name.replace("/", ":")
        for family in self.registry.collect():
            if family.name == wanted and family.type == "counter":
                points = [s for s in family.samples if s.name.endswith("_total")]
                return int(points[0].value) if points else 0
        return 0

    def render(self) -> str:
        """The exposition text of util/prometheus_exporter.cc: '# TYPE' lines, counters under
        their own name (no '_total'), no '_created' samples, bucket limits as absl prints doubles."""
        lines = []
        for family in self.registry.collect():
            if family.type not in ("counter", "histogram"):
                continue
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            if family.type == "counter":
                samples = [s._replace(name=family.name) for s in samples]
            lines.append(f"# TYPE {family.name} {family.type}")
            lines.extend(_sample_line(sample) for sample in samples)
        return "\n".join(lines) + "\n"


def _label_value(value: str) -> str:
    # prometheus_exporter.cc SanitizeLabelValue: only backslash and double quote are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _sample_line(sample) -> str:
    labels = dict(sample.labels)
    if "le" in labels and labels["le"] != "+Inf":
        labels["le"] = f"{float(labels['le']):.6g}"  # absl::StrCat(double): six significant digits
    text = ",".join(f'{name}="{_label_value(value)}"' for name, value in labels.items())
    return f"{sample.name}{{{text}}} {_number(sample.value)}"
