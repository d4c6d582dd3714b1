"""The Helm chart, validated without a cluster: ``helm lint`` and ``helm template`` over the
defaults and three other value sets; every object checked against the Kubernetes 1.30 OpenAPI
schemas (kubernetes-validate, strict: unknown fields fail) or, for custom resources, against
the CRD's published schema kept in tests/deploy/crds/; then what each object must say for a
rolling update to drop nothing, autoscaling on queue depth, and KServe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import CHART, ROOT, helm, one, render, template

CRDS = Path(__file__).parent / "crds"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"):
        "serving.kserve.io_v1alpha1_clusterservingruntime.json",
    ("serving.kserve.io/v1beta1", "InferenceService"):
        "serving.kserve.io_v1beta1_inferenceservice.json",
}  # fmt: skip

EVERYTHING = {
    "workers": 2,
    "autoscaling": {"hpa": {"enabled": True}},
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
    "networkPolicy": {"enabled": True, "allowedNamespaceLabels": {"team": "web"}},
    "artifacts": {"cache": {"persistence": {"enabled": True}}, "existingSecret": "s3-creds"},
    "env": {"PITSTOP_LOG_FORMAT": "json"},
}
KEDA = {"autoscaling": {"keda": {"enabled": True}}}
KSERVE = {"kserve": {"enabled": True, "inferenceService": {"enabled": True}}}
VALUE_SETS = {"defaults": {}, "everything": EVERYTHING, "keda": KEDA, "kserve": KSERVE}


def test_helm_lint_passes() -> None:
    result = subprocess.run(
        [helm(), "lint", str(CHART), "--strict"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid_kubernetes(name: str) -> None:
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        custom = CUSTOM.get((obj["apiVersion"], obj["kind"]))
        if custom is None:
            kubernetes_validate.validate(obj, "1.30", strict=True)
        else:
            schema = strict(json.loads((CRDS / custom).read_text()))
            jsonschema.Draft7Validator(schema).validate(obj)


def strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with strict field validation
    (``kubectl --validate=strict``): unknown fields are errors where the schema does not
    preserve them. Go's regexps also allow inline flags after ``^``; Python's want them first."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern[len("^(?i)") :]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def test_the_defaults_roll_updates_without_dropping_requests() -> None:
    objects = render()
    assert {o["kind"] for o in objects} == {
        "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Job",
    }  # fmt: skip
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace, drain = int(env["PITSTOP_SHUTDOWN_GRACE_S"]), int(env["PITSTOP_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > prestop + grace + drain
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # minutes of loading
    assert "command" not in container  # the image's tini stays PID 1
    assert container["args"][:3] == ["serve", "--host", "0.0.0.0"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    assert writable == {"/var/lib/pitstop", "/var/cache/pitstop", "/tmp", "/dev/shm"}
    secret = next(e for e in container["env"] if e["name"] == "PITSTOP_REGISTRY_URL")
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "pitstop-registry"
    job = one(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    service = one(objects, "Service")
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc", "metrics"}
    # The Service and the PDB select the server pods, never the migration job's pod.
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
        assert not selector.items() <= job_labels.items()


def test_autoscaling_on_queue_depth_or_cpu_never_both() -> None:
    keda = render(KEDA)
    scaled = one(keda, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "pitstop_inflight_requests" in trigger["metadata"]["query"]
    assert "replicas" not in one(keda, "Deployment")["spec"]  # the autoscaler owns it
    hpa = one(render(EVERYTHING), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pitstop"
    both = template({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}})
    assert both.returncode != 0
    assert "enable one" in both.stderr


def test_alert_rules_and_dashboard_are_the_ones_in_deploy() -> None:
    objects = render(EVERYTHING)
    rules = one(objects, "PrometheusRule")["spec"]
    assert rules == yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "deploy/grafana/pitstop-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["pitstop-dashboard.json"]) == shipped


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"replicas": 3}, "replicas"),
        ({"artifacts": {"url": "gs://bucket"}}, "artifacts.url"),
        ({"autoscaling": {"keda": {"prometheusServer": "prometheus:9090"}}}, "prometheusServer"),
        ({"kserve": {"inferenceService": {"modelFormat": "pytorch"}}}, "modelFormat"),
        (
            {"streams": [{"model": "m", "from": "kafka://k:9092/t", "to": "nats://n:4222/o"}]},
            "from",
        ),
        ({"streams": [{"model": "m", "from": "nats://n:4222/t"}]}, "to"),
    ],
)
def test_values_outside_the_schema_are_refused_naming_the_field(
    values: dict[str, Any], field: str
) -> None:
    result = template(values)
    assert result.returncode != 0
    assert field.split(".")[-1] in result.stderr


def test_kserve_mode_renders_a_serving_runtime_for_the_mounted_model() -> None:
    objects = render(KSERVE)
    assert {o["kind"] for o in objects} == {"ClusterServingRuntime", "InferenceService"}
    runtime = one(objects, "ClusterServingRuntime")["spec"]
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    assert "--model-dir=/mnt/models" in container["args"]
    assert "--model-name={{.Name}}" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {f["name"] for f in runtime["supportedModelFormats"]} == {
        "onnx", "sklearn", "xgboost", "lightgbm", "mlflow",
    }  # fmt: skip
    assert set(runtime["protocolVersions"]) == {"v2", "grpc-v2"}
    isvc = one(objects, "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "pitstop"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(__import__("sys").executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(ROOT / "deploy" / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["inferenceservice-raw.yaml", "inferenceservice-serverless.yaml"])
def test_the_kserve_samples_name_the_runtime_and_a_mode(name: str) -> None:
    """The samples in deploy/kserve/ against the CRD schema kept here (KServe's minimal one:
    spec is open) and KServe's ModelSpec fields (a container's fields plus the model's)."""
    sample = yaml.safe_load((ROOT / "deploy" / "kserve" / name).read_text())
    schema = strict(
        json.loads((CRDS / CUSTOM[("serving.kserve.io/v1beta1", "InferenceService")]).read_text())
    )
    jsonschema.Draft7Validator(schema).validate(sample)
    mode = sample["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("RawDeployment", "Serverless")
    model = sample["spec"]["predictor"]["model"]
    assert model["runtime"] == "pitstop"
    assert model["modelFormat"]["name"] in {"onnx", "sklearn", "xgboost", "lightgbm", "mlflow"}
    assert set(model) <= {
        "runtime", "modelFormat", "protocolVersion", "storageUri", "ports", "resources", "env",
        "args",
    }  # fmt: skip
    ports = model.get("ports", [])
    if mode == "Serverless":
        assert len(ports) <= 1  # Knative routes one port
    else:
        assert {p["name"] for p in ports} == {"http1", "h2c"}


def test_an_admin_token_secret_reaches_the_server() -> None:
    (container,) = one(render({"auth": {"adminTokenSecret": "pitstop-admin"}}), "Deployment")[
        "spec"
    ]["template"]["spec"]["containers"]
    token = next(e for e in container["env"] if e["name"] == "PITSTOP_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "pitstop-admin", "key": "token"}


def test_streams_reach_every_server_as_settings_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.settings import Settings

    streams = [
        {"model": "fraud", "from": "nats://nats:4222/tx", "to": "nats://nats:4222/scores",
         "batch_size": 32, "keep": ["id"]},
        {"model": "churn", "from": "redis://redis:6379/events", "to": "redis://redis:6379/out"},
    ]  # fmt: skip
    (container,) = one(render({"streams": streams}), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    env = next(e for e in container["env"] if e["name"] == "PITSTOP_STREAMS")
    monkeypatch.setenv("PITSTOP_STREAMS", env["value"])  # as the server reads it
    read = Settings().streams
    assert [(s.model, s.source, s.batch_size, s.keep) for s in read] == [
        ("fraud", "nats://nats:4222/tx", 32, ["id"]),
        ("churn", "redis://redis:6379/events", 64, []),
    ]
    (plain,) = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "PITSTOP_STREAMS" not in {e["name"] for e in plain["env"]}
