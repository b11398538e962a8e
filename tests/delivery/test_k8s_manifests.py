"""deploy/k8s: every overlay renders, validates against pinned Kubernetes schemas (offline), and
keeps the operational promises the service relies on (probes, drain, non-root, no secrets)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kai_inventory.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "prod")
# The oldest Kubernetes minor we support; kubernetes-validate ships its schemas (offline).
KUBERNETES_VERSION = "1.31.0"
PLACEHOLDER = re.compile(r"^<[^<>]+>$")

Obj = dict[str, Any]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def server(objects: list[Obj]) -> Obj:
    container: Obj = pod_spec(one(objects, "Deployment"))["containers"][0]
    return container


def configmap_env(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


def secret_template() -> Obj:
    text = (K8S / "base" / "secret.example.yaml").read_text()
    (doc,) = [d for d in yaml.safe_load_all(text) if d]
    secret: Obj = doc
    return secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes_version(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_secret_template_is_valid_for_the_pinned_kubernetes_version() -> None:
    kubernetes_validate.validate(secret_template(), KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(one(rendered["prod"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_produces_what_kubectl_kustomize_produces(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]

    def key(o: Obj) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(rendered[overlay], key=key)


def test_renderer_refuses_kustomize_features_outside_its_subset(
    tmp_path: Path, kustomize: Callable[[Path], list[Obj]]
) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\nnamePrefix: dev-\nconfigMapGenerator: []\n"
    )
    with pytest.raises(Exception, match="namePrefix"):
        kustomize(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_the_server_its_config_and_the_migration_job(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    kinds = sorted(o["kind"] for o in rendered[overlay])
    expected = ["ConfigMap", "Deployment", "Ingress", "Job", "Service"]
    if overlay == "prod":
        expected += ["HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert kinds == sorted(expected)
    namespaces = {o["metadata"]["namespace"] for o in rendered[overlay]}
    assert namespaces == {f"kai-{overlay}"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_readyz_for_readiness_and_healthz_for_liveness(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    container = server(rendered[overlay])
    port_names = {p["name"] for p in container["ports"]}
    assert {p["containerPort"] for p in container["ports"]} == {8080}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_prestop_pause_plus_the_drain_deadline(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    container = server(objects)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert pause >= 1
    drain = float(configmap_env(objects).get("KAI_DRAIN_S", Settings().drain_s))
    grace = pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"]
    assert grace > pause + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_on_a_read_only_root_filesystem(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for kind in ("Deployment", "Job"):
        spec = pod_spec(one(rendered[overlay], kind))
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            # a writable /tmp is mounted, as the root filesystem is read-only
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_selects_server_pods_and_never_the_migration_job(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    selector = one(objects, "Service")["spec"]["selector"].items()
    deployment = one(objects, "Deployment")
    assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() == selector
    assert not selector <= one(objects, "Job")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_keeps_websockets_open_and_routes_to_the_service(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    ingress = one(objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) >= 3600
    service = one(objects, "Service")
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    # the API with the WebSocket at /v1/ws, the seat-map page and its assets
    assert {p["path"] for p in paths} >= {"/v1", "/", "/static"}
    for path in paths:
        assert path["backend"]["service"]["name"] == service["metadata"]["name"]
        assert path["backend"]["service"]["port"]["name"] in service_ports
        assert path["path"] not in ("/metrics", "/healthz", "/readyz")
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert {rule["host"] for rule in ingress["spec"]["rules"]} <= tls_hosts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_is_accepted_by_the_service_settings_loader(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    env = dict(configmap_env(objects))
    env.update(secret_template()["stringData"])
    settings = load_settings(env)  # raises SettingsError on an unknown or malformed variable
    assert settings.drain_s == int(env["KAI_DRAIN_S"])
    for key in env:
        assert key in {"REDIS_URL", "DATABASE_URL", "PGPASSWORD"} or key.startswith("KAI_")
    # credentials never sit in the ConfigMap: URLs carry no password
    for value in configmap_env(objects).values():
        assert not re.search(r"://[^/@]*:[^/@]*@", value), value
    secret_name = secret_template()["metadata"]["name"]
    for kind in ("Deployment", "Job"):
        for container in pod_spec(one(objects, kind))["containers"]:
            refs = container["envFrom"]
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} == {
                one(objects, "ConfigMap")["metadata"]["name"]
            }
            assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} == {secret_name}


def test_no_secret_ships_in_any_build_and_the_template_holds_placeholders_only(
    rendered: dict[str, list[Obj]],
) -> None:
    for objects in rendered.values():
        assert not [o for o in objects if o["kind"] == "Secret"]
    template = secret_template()
    assert "data" not in template
    assert set(template["stringData"]) == {"KAI_JWT_SECRET", "PGPASSWORD"}
    for key, value in template["stringData"].items():
        assert PLACEHOLDER.match(value), f"{key} must be a <placeholder>"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_runs_migrate_up_with_the_servers_image(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    job = one(objects, "Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate", "up"]
    assert container["image"] == server(objects)["image"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_a_tag(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for kind in ("Deployment", "Job"):
        for container in pod_spec(one(rendered[overlay], kind))["containers"]:
            name, _, tag = container["image"].rpartition(":")
            assert "/" in name, container["image"]
            assert tag not in ("", "latest"), container["image"]


def test_prod_autoscales_the_deployment_and_limits_disruption(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["prod"]
    deployment = one(objects, "Deployment")
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = one(objects, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
