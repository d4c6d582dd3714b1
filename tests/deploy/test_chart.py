"""The Helm chart, validated without a cluster: ``helm lint`` and ``helm template`` over the
defaults and four other value sets; every object checked against the Kubernetes 1.30 OpenAPI
schemas (kubernetes-validate, strict: unknown fields fail) or, for custom resources, against
the CRD's published schema kept in tests/deploy/crds/; then what each object must say for a
rolling update to drop nothing, autoscaling on queue depth, KServe, and the security settings
(tokens, TLS from a cert-manager Secret, mutual TLS, authenticated scraping, signed versions)."""

from __future__ import annotations

import json
import os
import shutil
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
CLIENT_SCOPES = {"billing": ["infer:fraud"], "prometheus": ["read"]}
PROMETHEUS_TLS = {
    "ca": {"secret": {"name": "pitstop-tls", "key": "ca.crt"}},
    "cert": {"secret": {"name": "prometheus-client", "key": "tls.crt"}},
    "keySecret": {"name": "prometheus-client", "key": "tls.key"},
    "serverName": "pitstop.serving.svc",
}
SECURE = {
    "workers": 2,
    "auth": {"inference": "on", "rateLimit": 50, "rateBurst": 100, "clientScopes": CLIENT_SCOPES},
    "tls": {"secretName": "pitstop-tls", "mutual": True},
    "metrics": {
        "tokenSecret": "pitstop-metrics",
        "tlsConfig": PROMETHEUS_TLS,
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
    },
    "signing": {"requireSignature": True, "trustedKeysConfigMap": "pitstop-trusted-keys"},
}
VALUE_SETS = {
    "defaults": {}, "everything": EVERYTHING, "keda": KEDA, "kserve": KSERVE, "secure": SECURE,
}  # fmt: skip


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
        ({"auth": {"inference": "sometimes"}}, "auth.inference"),
        ({"auth": {"insecure": "yes"}}, "auth.insecure"),
        ({"auth": {"rateLimit": -1}}, "auth.rateLimit"),
        ({"auth": {"rateBurst": 1.5}}, "auth.rateBurst"),
        ({"tls": {"mutual": True}}, "tls.secretName"),
        ({"tls": {"secretName": "t"}, "auth": {"clientScopes": CLIENT_SCOPES}}, "tls.mutual"),
        ({"signing": {"requireSignature": True}}, "signing.trustedKeysConfigMap"),
        ({"signing": {"trustedKeys": "k"}}, "trustedKeys"),
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


def server(values: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment's pod spec and its one container."""
    pod = one(render(values), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_defaults_ask_for_tokens_and_probe_plain_http() -> None:
    pod, container = server()
    env = plain_env(container)
    assert env["PITSTOP_INFERENCE_AUTH"] == "auto"  # on: the pods bind 0.0.0.0
    assert not {name for name in env if name.startswith("PITSTOP_TLS_")}
    assert not {"PITSTOP_INSECURE", "PITSTOP_RATE_LIMIT", "PITSTOP_RATE_BURST",
                "PITSTOP_REQUIRE_SIGNATURE", "PITSTOP_TRUSTED_KEYS"} & env.keys()  # fmt: skip
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "scheme" not in container[probe]["httpGet"]
        assert "tcpSocket" not in container[probe]
    assert {v["name"] for v in pod["volumes"]} == {"home", "cache", "tmp", "shm"}


def test_a_tls_secret_is_mounted_whole_and_probed_over_https() -> None:
    monitors = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    values = {"tls": {"secretName": "pitstop-tls"}, "metrics": monitors}
    objects = render(values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = plain_env(container)
    assert env["PITSTOP_TLS_CERT"] == "/etc/pitstop/tls/tls.crt"
    assert env["PITSTOP_TLS_KEY"] == "/etc/pitstop/tls/tls.key"
    assert "PITSTOP_TLS_CLIENT_CA" not in env
    assert "PITSTOP_TLS_CLIENT_SCOPES" not in env
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/pitstop/tls"]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the renewed certificate
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "pitstop-tls"
    assert volume["secret"]["defaultMode"] == 0o440  # the key: the pod's fsGroup only
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    (pod_endpoint,) = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    for scrape in (endpoint, pod_endpoint):
        assert scrape["scheme"] == "https"
        assert scrape["tlsConfig"] == {"insecureSkipVerify": True}
        assert "authorization" not in scrape
    verified = {**values, "metrics": {**monitors, "tlsConfig": PROMETHEUS_TLS}}
    (endpoint,) = one(render(verified), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == PROMETHEUS_TLS  # verbatim


def test_mutual_tls_maps_certificates_to_scopes_and_probes_tcp() -> None:
    _pod, container = server(SECURE)
    env = plain_env(container)
    assert env["PITSTOP_TLS_CLIENT_CA"] == "/etc/pitstop/tls/ca.crt"
    assert json.loads(env["PITSTOP_TLS_CLIENT_SCOPES"]) == CLIENT_SCOPES
    # The kubelet has no client certificate: a handshake would fail, so the probes connect.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "http"}
        assert "httpGet" not in container[probe]
    assert int(env["PITSTOP_WORKERS"]) >= 2  # a worker listens once its models are loaded


def test_prometheus_scrapes_with_a_read_token_from_a_secret() -> None:
    monitors = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    objects = render({"metrics": {**monitors, "tokenSecret": "pitstop-metrics"}})
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    (pod_endpoint,) = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    for scrape in (endpoint, pod_endpoint):
        assert scrape["authorization"] == {
            "type": "Bearer", "credentials": {"name": "pitstop-metrics", "key": "token"},
        }  # fmt: skip
        assert "scheme" not in scrape  # no TLS: plain http
        assert "tlsConfig" not in scrape
    plain = render({"metrics": monitors})
    assert "authorization" not in one(plain, "ServiceMonitor")["spec"]["endpoints"][0]
    assert "authorization" not in one(plain, "PodMonitor")["spec"]["podMetricsEndpoints"][0]


def test_trusted_keys_come_from_a_config_map() -> None:
    signing = {"requireSignature": True, "trustedKeysConfigMap": "pitstop-trusted-keys"}
    pod, container = server({"signing": signing})
    env = plain_env(container)
    assert env["PITSTOP_REQUIRE_SIGNATURE"] == "1"
    assert json.loads(env["PITSTOP_TRUSTED_KEYS"]) == ["/etc/pitstop/keys"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/pitstop/keys"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "pitstop-trusted-keys"
    # Keys without the requirement: mounted and checked at start, nothing enforced.
    _pod, checked = server({"signing": {"trustedKeysConfigMap": "pitstop-trusted-keys"}})
    assert "PITSTOP_REQUIRE_SIGNATURE" not in plain_env(checked)
    assert "PITSTOP_TRUSTED_KEYS" in plain_env(checked)


POD_MONITOR = {"podMonitor": {"enabled": True}}


@pytest.mark.parametrize(
    ("values", "says"),
    [
        # What the server itself would refuse at start (CrashLoopBackOff), refused at install.
        ({"auth": {"inference": "off"}}, "auth.insecure=true"),
        ({"kserve": {"enabled": True}, "auth": {"inference": "off"}}, "auth.insecure=true"),
        # A setting owned by a value is not also taken from env (two entries, one silently lost).
        ({"env": {"PITSTOP_INFERENCE_AUTH": "on"}}, "env.PITSTOP_INFERENCE_AUTH"),
        (
            {"signing": {"trustedKeysConfigMap": "k"}, "env": {"PITSTOP_TRUSTED_KEYS": "[]"}},
            "signing.trustedKeysConfigMap",
        ),
        # Prometheus without a client certificate cannot complete a mutual TLS handshake.
        (
            {"tls": {"secretName": "t", "mutual": True}, "metrics": POD_MONITOR},
            "metrics.tlsConfig",
        ),
    ],
)
def test_settings_a_server_could_not_run_with_are_refused(
    values: dict[str, Any], says: str
) -> None:
    result = template(values)
    assert result.returncode != 0
    assert says in result.stderr


@pytest.mark.parametrize(
    "values",
    [{"tls": None}, {"signing": None}, {"auth": {"inference": None}}, {"kserve": {"enabled": True},
     "tls": None}],
)  # fmt: skip
def test_values_of_an_older_chart_are_named_not_a_nil_pointer(values: dict[str, Any]) -> None:
    """``helm upgrade --reuse-values`` from a chart version without the security values renders
    this chart without their defaults (null in a values file removes a default just the same)."""
    result = template(values)
    assert result.returncode != 0
    assert "--reset-then-reuse-values" in result.stderr
    assert "nil pointer" not in result.stderr


def test_security_values_reach_the_server_as_settings_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pitstop.settings import Settings

    _pod, container = server(SECURE)
    for name, value in plain_env(container).items():
        if name.startswith("PITSTOP_"):
            monkeypatch.setenv(name, value)  # as the server reads them
    read = Settings()
    assert read.inference_auth == "on"
    assert (read.tls_cert, read.tls_key, read.tls_client_ca) == (
        Path("/etc/pitstop/tls/tls.crt"), Path("/etc/pitstop/tls/tls.key"),
        Path("/etc/pitstop/tls/ca.crt"),
    )  # fmt: skip
    assert read.tls_client_scopes == CLIENT_SCOPES
    assert (read.rate_limit, read.rate_burst) == (50.0, 100)
    assert read.require_signature is True
    assert read.trusted_keys == [Path("/etc/pitstop/keys")]
    assert read.insecure is False
    # Each file the settings name is in a read-only volume mounted where they look.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in (read.tls_cert, read.tls_key, read.tls_client_ca, *read.trusted_keys):
        assert path is not None
        folder = str(path if path in read.trusted_keys else path.parent)
        assert mounts[folder]["readOnly"] is True


def test_a_renewed_secret_is_served_through_the_kubelets_symlink_swap(tmp_path: Path) -> None:
    """What the kubelet does to a Secret volume when cert-manager renews the Secret: each file
    is a symlink through ``..data`` to a timestamped folder, and ``..data`` is swapped atomically
    to a new folder (then the old one is removed). The server's TLS files, at the paths the
    chart renders, follow the swap without a restart."""
    from pitstop.transports.tls import TlsFiles
    from tests.security.pki import Authority, Issued

    _pod, container = server(SECURE)
    env = plain_env(container)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    volume = tmp_path / "volume"
    volume.mkdir()
    pki = Authority(tmp_path / "pki")

    def in_volume(variable: str) -> Path:
        return volume / Path(env[variable]).relative_to(mount["mountPath"])

    def publish(stamp: str, issued: Issued) -> None:
        folder = volume / f"..{stamp}"
        folder.mkdir()
        for name, source in (("tls.crt", issued.cert), ("tls.key", issued.key),
                             ("ca.crt", pki.cert)):  # fmt: skip
            shutil.copyfile(source, folder / name)
            if not (volume / name).is_symlink():
                (volume / name).symlink_to(f"..data/{name}")
        (volume / "..data_tmp").symlink_to(folder.name)
        os.replace(volume / "..data_tmp", volume / "..data")

    publish("2025_01_01_00_00_00.000000001", pki.issue("localhost", server=True, stem="first"))
    files = TlsFiles(
        in_volume("PITSTOP_TLS_CERT"), in_volume("PITSTOP_TLS_KEY"),
        in_volume("PITSTOP_TLS_CLIENT_CA"),
    )  # fmt: skip
    first = files.material.certificate
    assert files.refresh() is False  # nothing changed
    renewed = pki.issue("localhost", server=True, stem="renewed")
    publish("2025_03_01_00_00_00.000000002", renewed)
    shutil.rmtree(volume / "..2025_01_01_00_00_00.000000001")
    assert files.refresh() is True
    assert files.material.certificate == renewed.cert.read_bytes() != first
    assert files.material.key == renewed.key.read_bytes()


def test_unquoted_on_and_off_in_a_values_file_mean_what_they_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """YAML reads ``inference: off`` as false: the chart takes it as "off"."""
    from pitstop.settings import Settings

    _pod, container = server({"auth": {"inference": False, "insecure": True}})
    env = plain_env(container)
    assert (env["PITSTOP_INFERENCE_AUTH"], env["PITSTOP_INSECURE"]) == ("off", "1")
    monkeypatch.setenv("PITSTOP_INFERENCE_AUTH", env["PITSTOP_INFERENCE_AUTH"])
    monkeypatch.setenv("PITSTOP_INSECURE", env["PITSTOP_INSECURE"])
    assert (Settings().inference_auth, Settings().insecure) == ("off", True)
    assert plain_env(server({"auth": {"inference": True}})[1])["PITSTOP_INFERENCE_AUTH"] == "on"
    runtime = one(render(KSERVE), "ClusterServingRuntime")["spec"]
    (kserve,) = runtime["containers"]
    assert plain_env(kserve)["PITSTOP_INFERENCE_AUTH"] == "auto"
