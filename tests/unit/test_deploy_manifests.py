"""The deployment files: Kubernetes manifests, the job image, the Grafana dashboard.

No cluster is needed. The FlinkDeployment is validated against a JSON schema
written here from the Flink Kubernetes Operator's CRD (flink.apache.org/v1beta1,
operator 1.11 to 1.13): the fields livefeat uses, their types and enums, and
the rule of operator 1.11 that every ``flinkConfiguration`` value is a string.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipelines.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "livefeat.json"
METRICS_DOC = ROOT / "deploy" / "grafana" / "README.md"

_RESOURCE = {
    "type": "object",
    "properties": {"cpu": {"type": "number", "exclusiveMinimum": 0},
                   "memory": {"type": "string", "pattern": r"^\d+(m|g|Mi|Gi)$"},
                   "ephemeralStorage": {"type": "string"}},
    "required": ["cpu", "memory"],
    "additionalProperties": False,
}
_K8S_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}

FLINK_DEPLOYMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "flink.apache.org/v1beta1"},
        "kind": {"const": "FlinkDeployment"},
        "metadata": {"type": "object", "required": ["name", "namespace"],
                     "properties": {"name": _K8S_NAME, "namespace": _K8S_NAME}},
        "spec": {
            "type": "object",
            "required": ["image", "flinkVersion", "serviceAccount", "jobManager", "taskManager",
                         "job", "flinkConfiguration"],
            "additionalProperties": False,
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "flinkVersion": {"enum": ["v1_18", "v1_19", "v1_20", "v2_0", "v2_1", "v2_2"]},
                "mode": {"enum": ["native", "standalone"]},
                "serviceAccount": _K8S_NAME,
                "restartNonce": {"type": "integer"},
                "flinkConfiguration": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                "logConfiguration": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                "podTemplate": {"type": "object",
                                "properties": {"spec": {"type": "object",
                                                        "required": ["containers"]}}},
                "ingress": {"type": "object"},
                "jobManager": {"type": "object", "required": ["resource"],
                               "additionalProperties": False,
                               "properties": {"replicas": {"type": "integer", "minimum": 1},
                                              "resource": _RESOURCE,
                                              "podTemplate": {"type": "object"}}},
                "taskManager": {"type": "object", "required": ["resource"],
                                "additionalProperties": False,
                                "properties": {"replicas": {"type": "integer", "minimum": 1},
                                               "resource": _RESOURCE,
                                               "podTemplate": {"type": "object"}}},
                "job": {
                    "type": "object",
                    "required": ["jarURI", "parallelism", "upgradeMode", "state"],
                    "additionalProperties": False,
                    "properties": {
                        "jarURI": {"type": "string", "pattern": r"^(local|https?|s3)://"},
                        "entryClass": {"type": "string"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "parallelism": {"type": "integer", "minimum": 1},
                        "upgradeMode": {"enum": ["stateless", "last-state", "savepoint"]},
                        "state": {"enum": ["running", "suspended"]},
                        "allowNonRestoredState": {"type": "boolean"},
                        "initialSavepointPath": {"type": "string"},
                        "savepointTriggerNonce": {"type": "integer"},
                        "savepointRedeployNonce": {"type": "integer"},
                        "checkpointTriggerNonce": {"type": "integer"},
                    },
                },
            },
        },
    },
}


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            docs.append(doc)
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [doc for doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["podTemplate"]["spec"]["containers"]
    (main,) = [c for c in containers if c["name"] == "flink-main-container"]
    return main


def test_every_manifest_is_a_named_namespaced_object() -> None:
    docs = _documents()
    assert {doc["kind"] for doc in docs} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "FlinkDeployment",
        "PodMonitor"}
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "livefeat", doc["kind"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_flink_deployment_matches_the_operator_schema() -> None:
    jsonschema.validate(_one("FlinkDeployment"), FLINK_DEPLOYMENT_SCHEMA)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("spec", "job", "upgradeMode"), "sometimes", "is not one of"),
    (("spec", "flinkVersion"), "v2_9", "is not one of"),
    (("spec", "flinkConfiguration", "taskmanager.numberOfTaskSlots"), 2, "is not of type 'string'"),
    (("spec", "jobManager", "resource", "memory"), 2048, "is not of type 'string'"),
    (("spec", "job", "parallelism"), "4", "is not of type 'integer'"),
])
def test_the_schema_rejects_what_the_operator_rejects(path: tuple[str, ...], value: object,
                                                      message: str) -> None:
    doc = _one("FlinkDeployment")
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(doc, FLINK_DEPLOYMENT_SCHEMA)


def test_state_lives_on_s3_and_upgrades_use_savepoints() -> None:
    spec = _one("FlinkDeployment")["spec"]
    conf = spec["flinkConfiguration"]
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
                "high-availability.storageDir"):
        assert conf[key].startswith("s3://"), key
    assert spec["job"]["upgradeMode"] == "savepoint"
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["restart-strategy.type"] == "fixed-delay"
    assert int(conf["restart-strategy.fixed-delay.attempts"]) >= 1
    assert conf["metrics.reporter.prom.factory.class"] == (
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory")
    ports = {p["name"]: p["containerPort"] for p in _container(_one("FlinkDeployment"))["ports"]}
    assert str(ports["metrics"]) == conf["metrics.reporter.prom.port"]


def test_s3_plugin_and_jars_match_the_image_flink_version() -> None:
    deployment = _one("FlinkDeployment")
    image = re.search(r"^ARG FLINK_IMAGE=flink:(\d+\.\d+\.\d+)-", DOCKERFILE.read_text(),
                      re.MULTILINE)
    assert image is not None
    version = image.group(1)
    major, minor, _ = version.split(".")
    assert deployment["spec"]["flinkVersion"] == f"v{major}_{minor}"
    env = {e["name"]: e for e in _container(deployment)["env"]}
    assert env["ENABLE_BUILT_IN_PLUGINS"]["value"] == f"flink-s3-fs-presto-{version}.jar"
    assert deployment["spec"]["job"]["jarURI"] == (
        f"local:///opt/flink/opt/flink-python-{version}.jar")
    lock = (ROOT / "requirements.lock").read_text()
    assert f"apache-flink=={version}\n" in lock  # JVM side and PyFlink are one release


def test_python_paths_match_the_image() -> None:
    deployment = _one("FlinkDeployment")
    dockerfile = DOCKERFILE.read_text()
    conf = deployment["spec"]["flinkConfiguration"]
    assert "python3.11 -m venv /opt/venv" in dockerfile
    for key in ("python.executable", "python.client.executable"):
        assert conf[key] == "/opt/venv/bin/python"
    args = deployment["spec"]["job"]["args"]
    assert args[args.index("-pyclientexec") + 1] == "/opt/venv/bin/python"
    assert args[args.index("-pym") + 1] == "pipelines.runtime.entry"
    assert (ROOT / "pipelines" / "runtime" / "entry.py").is_file()
    from pipelines.runtime.entry import parse_args

    parsed = parse_args(args[args.index("-pym") + 2:])
    assert parsed.pipeline == "marketplace" and not parsed.bounded


def test_job_checkpoints_go_where_the_deployment_says() -> None:
    """The job sets execution.checkpointing.dir itself, so its settings must name the same
    S3 location as the FlinkDeployment, or checkpoints would land on the pod's disk."""
    conf = _one("FlinkDeployment")["spec"]["flinkConfiguration"]
    settings = yaml.safe_load(_one("ConfigMap")["data"]["livefeat.yaml"])
    assert settings["flink"]["checkpoint_dir"] == conf["execution.checkpointing.dir"]
    assert conf["execution.checkpointing.dir"].startswith("s3://")


def test_service_account_role_and_binding_fit_together() -> None:
    deployment = _one("FlinkDeployment")
    account = _one("ServiceAccount")
    role = _one("Role")
    binding = _one("RoleBinding")
    assert deployment["spec"]["serviceAccount"] == account["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    # What a native-mode JobManager does with its TaskManagers and HA ConfigMaps.
    needed = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for key in (("", "pods"), ("", "configmaps"), ("apps", "deployments")):
        assert needed <= granted[key], key


def test_config_map_is_valid_livefeat_settings_and_is_mounted() -> None:
    deployment = _one("FlinkDeployment")
    config_map = _one("ConfigMap")
    settings = Settings.model_validate(yaml.safe_load(config_map["data"]["livefeat.yaml"]))
    assert settings.offline_store.uri.startswith("s3://")
    assert settings.online_store.type == "redis"
    assert settings.s3.endpoint_url is None  # AWS itself
    volumes = {v["name"]: v for v in deployment["spec"]["podTemplate"]["spec"]["volumes"]}
    container = _container(deployment)
    (mount,) = container["volumeMounts"]
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LIVEFEAT_CONFIG"]["value"] == f"{mount['mountPath']}/livefeat.yaml"


def test_credentials_come_from_a_secret_and_no_file_holds_one() -> None:
    env = {e["name"]: e for e in _container(_one("FlinkDeployment"))["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "livefeat-s3-credentials", "key": name}
        assert "value" not in env[name]
    assert not any(doc["kind"] == "Secret" for doc in _documents())
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "create secret generic livefeat-s3-credentials" in readme
    for path in [*K8S.glob("*.yaml"), DOCKERFILE]:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), path
        assert not re.search(r"(?i)(secret[-_]?access[-_]?key|s3\.secret-key)\s*[:=]\s*\S",
                             text), path


def test_pod_monitor_selects_the_deployments_pods() -> None:
    monitor = _one("PodMonitor")
    deployment = _one("FlinkDeployment")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": deployment["metadata"]["name"]}
    ports = {p["name"] for p in _container(deployment)["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_dashboard_queries_only_documented_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    documented = set(re.findall(r"`(flink_[A-Za-z0-9_]+)`", METRICS_DOC.read_text()))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    queried: set[str] = set()
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        for target in panel.get("targets", []):
            queried |= set(re.findall(r"\bflink_[A-Za-z0-9_]+", target["expr"]))
            assert target["datasource"]["uid"] == "${datasource}"
    for query in dashboard["templating"]["list"]:
        if query["type"] == "query":
            queried |= set(re.findall(r"\bflink_[A-Za-z0-9_]+", query["definition"]))
    assert queried, "the dashboard queries nothing"
    assert queried <= documented, sorted(queried - documented)
    user_metrics = {prometheus for *_, prometheus in _metric_rows()}
    assert len(user_metrics) == 10
    assert user_metrics <= queried  # every pipeline metric is on the dashboard


def _metric_rows() -> list[tuple[str, str, str, str]]:
    """(kind, name, label key, Prometheus name) of each row of the metrics table."""
    rows: list[tuple[str, str, str, str]] = re.findall(
        r"^\| (counter|gauge) `(\w+)` in `livefeat`(?: / `(\w+)=<\w+>`)? \| `(\w+)` \|",
        METRICS_DOC.read_text(), re.MULTILINE)
    return rows


def test_dashboard_metric_names_follow_flinks_naming_rule() -> None:
    """Each documented user metric is the Prometheus name Flink derives from its registration."""
    rows = _metric_rows()
    assert len(rows) == 10
    for _, name, key, prometheus in rows:
        groups = "livefeat" + (f"_{key}" if key else "")
        assert prometheus == f"flink_taskmanager_job_task_operator_{groups}_{name}"
