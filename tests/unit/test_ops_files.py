"""The deployment files (Dockerfile, compose, Prometheus, Grafana, Kubernetes) agree with the code.

Nothing here runs Docker or a cluster: each file is parsed and checked against what the code
actually offers: the `edge-agent` argument parser, the environment variables it reads, the HTTP
routes, the metric names it defines and the Redis queue keys.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edge_agent.cli import build_parser
from shared import keyspace
from shared.config import PROVIDERS, load_config_file
from shared.redis_settings import parse_sentinels

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
K8S = OPS / "k8s"
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = OPS / "Dockerfile"
DASHBOARD = OPS / "grafana" / "dashboards" / "edge.json"

EDGE_IMAGE = "llm-edge-agent"
WORKER_SERVICES = {f"worker-{p}": p for p in PROVIDERS}
DEFAULT_SERVICES = {"redis", "front", *WORKER_SERVICES}
# Metrics the deployment files may reference before the code defines them. Empty on purpose:
# worker autoscaling reads the Redis queue directly (ops/k8s/keda-scaledobjects.yaml), so no
# planned metric (such as a queue-depth gauge) is needed yet. Add names here, marked, if one is.
PLANNED_METRICS: frozenset[str] = frozenset()


# --- helpers --------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def edge_services() -> dict[str, dict[str, Any]]:
    """Services that run the project's image (as opposed to redis, prometheus, grafana)."""
    return {
        name: svc
        for name, svc in services().items()
        if str(svc.get("image", "")).startswith(EDGE_IMAGE) or "build" in svc
    }


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def parse_cli(args: list[str], where: str) -> Any:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `edge-agent {' '.join(args)}` is not accepted by edge_agent.cli")


@cache
def code_env_vars() -> frozenset[str]:
    """Upper-case string literals in shared's configuration modules and edge_agent:
    the names the code reads.

    A superset (it also holds words like "INFO"), which is fine for catching misspelt names.
    """
    settings = [
        ROOT / "shared" / name for name in ("config.py", "settings.py", "deployments.py", "redis_settings.py")
    ]
    files = [*settings, *sorted((ROOT / "edge_agent").rglob("*.py"))]
    found: set[str] = set()
    for path in files:
        found.update(re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", path.read_text()))
    return frozenset(found)


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@cache
def routes() -> frozenset[str]:
    return frozenset(re.findall(r'Route\("([^"]+)"', (ROOT / "edge_front" / "app.py").read_text()))


@cache
def defined_metrics() -> frozenset[str]:
    """Exposed sample names of every metric in edge_front/metrics.py and edge_workers/metrics.py.

    Read with `ast`, not imported: both modules register llm_edge_tokens_total in the default
    registry, so importing both into one process would raise.
    """
    names: set[str] = set()
    for path in (ROOT / "edge_front" / "metrics.py", ROOT / "edge_workers" / "metrics.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"Counter", "Gauge", "Histogram", "Summary"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            name = node.args[0].value
            names.add(name)
            if node.func.id == "Counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
            if node.func.id in {"Histogram", "Summary"}:
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return frozenset(names)


@cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return tuple(out)


def dockerfile_args(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc.get("kind") == kind}


def k8s_edge_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(deployment name, pod spec, container) for every container running the project's image."""
    found = []
    for name, deployment in k8s_objects("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if str(container["image"]).startswith(EDGE_IMAGE):
                found.append((name, pod, container))
    return found


def k8s_cli_args(container: dict[str, Any]) -> list[str]:
    # The image's ENTRYPOINT is edge-agent, so `args` are its arguments; a `command` would
    # replace the entrypoint and then has to name edge-agent itself.
    command = container.get("command")
    if command:
        assert command[0] == "edge-agent", f"{container['name']}: command must start with edge-agent"
        return [*command[1:], *container.get("args", [])]
    args: list[str] = container["args"]
    return args


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_python() -> None:
    stages = dockerfile_args("FROM")
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    arg_defaults = dict(a.split("=", 1) for a in dockerfile_args("ARG") if "=" in a)
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults.get(m.group(1), ""), image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim", image), image


def test_dockerfile_copies_files_that_exist_and_are_not_dockerignored() -> None:
    ignore = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#") and not p.startswith("!")
    ]
    copied: list[str] = []
    for rest in dockerfile_args("COPY"):
        tokens = shlex.split(rest)
        if any(t.startswith("--from") for t in tokens):
            continue
        sources = [t for t in tokens if not t.startswith("--")][:-1]
        for source in sources:
            if any(ch in source for ch in "*?["):
                continue  # an optional glob (README*): allowed to match nothing
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
            for pattern in ignore:
                bare = pattern.lstrip("/").removeprefix("**/")
                assert not fnmatch.fnmatch(source, bare), f".dockerignore ({pattern}) hides {source}"
            copied.append(source)
    assert {"requirements.lock", "pyproject.toml"} <= set(copied)
    # Every package pyproject installs must reach the build stage.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"


def test_dockerfile_builds_offline() -> None:
    # `# syntax=...` makes BuildKit pull a frontend image from a registry before building.
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.M | re.I)


def test_the_lock_installs_on_debian_12_python() -> None:
    # redis-py needs async-timeout below Python 3.11.3; Debian 12 (and its images) has 3.11.2.
    pins = (ROOT / "requirements.lock").read_text().splitlines()
    assert any(p.startswith("async-timeout==") and 'python_full_version < "3.11.3"' in p for p in pins)


def test_dockerfile_installs_lock_then_project_without_deps() -> None:
    runs = " ".join(dockerfile_args("RUN"))
    assert "-r requirements.lock" in runs
    assert "pip install --no-deps ." in runs


def test_dockerfile_runtime_contract() -> None:
    users = dockerfile_args("USER")
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert json.loads(dockerfile_args("ENTRYPOINT")[-1]) == ["edge-agent"]
    cmd = json.loads(dockerfile_args("CMD")[-1])
    assert cmd == ["front"]
    parse_cli(cmd, "Dockerfile CMD")
    assert "8080" in dockerfile_args("EXPOSE")[-1].split()

    healthcheck = dockerfile_args("HEALTHCHECK")[-1]
    _, _, probe = healthcheck.partition("CMD ")
    exec_form = json.loads(probe)
    assert exec_form[0] == "python", "slim has no curl: probe with the interpreter"
    assert "urllib" in exec_form[-1]
    paths = re.findall(r"/health[a-z/]*", exec_form[-1])
    assert paths == ["/health/live"]
    assert paths[0] in routes()


# --- compose.yaml ---------------------------------------------------------------------------------


def test_compose_services_and_profiles() -> None:
    svcs = services()
    assert {*DEFAULT_SERVICES, "prometheus", "grafana", "fake-upstream"} <= set(svcs)
    default = {name for name, svc in svcs.items() if not svc.get("profiles")}
    assert default == DEFAULT_SERVICES, "plain `docker compose up` = redis + front + workers"
    assert svcs["prometheus"]["profiles"] == ["observability"]
    assert svcs["grafana"]["profiles"] == ["observability"]
    assert svcs["fake-upstream"]["profiles"] == ["demo"]
    assert svcs["redis"]["image"].startswith("redis:7")
    assert "redis-cli" in svcs["redis"]["healthcheck"]["test"]


def test_compose_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = services()["redis"]
    command = argv(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    data = command[command.index("--dir") + 1]
    volume = next(v for v in redis["volumes"] if v.endswith(f":{data}"))
    assert volume.split(":")[0] in compose()["volumes"], "a named volume, kept by `down`"


def test_compose_says_it_needs_compose_v2() -> None:
    # Compose v1 (docker-compose 1.x) rejects the top-level `name:`.
    if "name" in compose():
        assert "Compose v2" in COMPOSE.read_text()
        assert "Compose v2" in (ROOT / "README.md").read_text()


def test_compose_front() -> None:
    front = services()["front"]
    assert argv(front["command"])[0] == "front"
    assert any(str(p).endswith(":8080") for p in front["ports"])
    # Required by the front itself, not by compose interpolation (which would break `down`).
    assert ":?" not in COMPOSE.read_text(), "a ${VAR:?} makes every compose command fail without VAR"
    assert front["environment"]["EDGE_MASTER_KEY"] == "${EDGE_MASTER_KEY:-}"
    assert "EDGE_MASTER_KEY" in (ROOT / ".env.example").read_text()
    assert front["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_workers_scale_independently() -> None:
    replica_vars = set()
    for name, provider in WORKER_SERVICES.items():
        worker = services()[name]
        assert "container_name" not in worker, f"{name}: container_name blocks --scale"
        assert "ports" not in worker, f"{name}: a fixed host port blocks --scale"
        args = parse_cli(argv(worker["command"]), f"compose {name}")
        assert (args.command, args.provider) == ("worker", provider)
        assert args.metrics_port == 9100
        found = INTERPOLATION.findall(str(worker["deploy"]["replicas"]))
        assert len(found) == 1, f"{name}: deploy.replicas should come from a variable"
        replica_vars.add(found[0])
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len(replica_vars) == len(WORKER_SERVICES), "each provider's pool needs its own variable"


def test_compose_commands_are_real_subcommands() -> None:
    for name, svc in edge_services().items():
        if "command" in svc:
            parse_cli(argv(svc["command"]), f"compose service {name}")


def test_compose_env_names_are_read_by_the_code() -> None:
    known = code_env_vars()
    for name, svc in edge_services().items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            assert key in known, f"compose {name}: {key} is not read by the code"
            for var in INTERPOLATION.findall(str(value)):
                assert var in known, f"compose {name}: {key} is set from ${{{var}}}, an unknown name"


def test_compose_front_and_workers_share_one_env_anchor() -> None:
    root = yaml.compose(COMPOSE.read_text())
    top = {k.value: v for k, v in root.value}
    anchor = top["x-edge-env"]
    svc_nodes = {k.value: v for k, v in top["services"].value}
    for name in ("front", *WORKER_SERVICES):
        fields = {k.value: v for k, v in svc_nodes[name].value}
        merged = [v for k, v in fields["environment"].value if k.value == "<<"]
        assert merged and merged[0] is anchor, f"{name}: environment must merge *edge-env"


HA_SERVICES = {"redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SENTINEL_CONF = OPS / "redis" / "sentinel.conf"


def sentinel_directives() -> dict[str, list[str]]:
    """ops/redis/sentinel.conf's `sentinel <directive> args...` lines, and `port`."""
    found: dict[str, list[str]] = {}
    for line in SENTINEL_CONF.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key, args = (words[1], words[2:]) if words[0] == "sentinel" else (words[0], words[1:])
        found[key] = args
    return found


def test_compose_ha_profile_is_a_primary_a_replica_and_three_sentinels() -> None:
    svcs = services()
    assert {name for name, svc in svcs.items() if svc.get("profiles") == ["ha"]} == HA_SERVICES
    for name in HA_SERVICES:
        assert svcs[name]["image"] == svcs["redis"]["image"], f"{name}: the same Redis image as `redis`"
        assert "ports" not in svcs[name], f"{name}: the compose network only"
    replica = argv(svcs["redis-replica"]["command"])
    at = replica.index("--replicaof")
    assert replica[at + 1 : at + 3] == ["redis-primary", "6379"]
    for node in ("redis-primary", "redis-replica"):
        # Docker DNS names, not container IPs (they change on a restart), in what Sentinel hands out.
        command = argv(svcs[node]["command"])
        assert command[command.index("--replica-announce-ip") + 1] == node
    _, host, port, quorum = sentinel_directives()["monitor"]
    assert (host, port, int(quorum)) == ("redis-primary", "6379", 2)
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        mount = svcs[name]["volumes"][0].split(":")
        assert (ROOT / mount[0]).resolve() == SENTINEL_CONF and mount[2] == "ro"
        script = argv(svcs[name]["command"])[-1]
        # Sentinel rewrites its config file: each one must start from a writable copy.
        assert f"cp {mount[1]} " in script and script.endswith("--sentinel")


def test_compose_ha_instructions_name_the_profiles_sentinels() -> None:
    """The variables compose.yaml tells operators to set point at the ha profile's sentinels."""
    match = re.search(r"REDIS_SENTINELS=(\S+) REDIS_SENTINEL_MASTER=(\S+)", COMPOSE.read_text())
    assert match, "compose.yaml shows how to point front and workers at the sentinels"
    sentinels = parse_sentinels(match.group(1))
    directives = sentinel_directives()
    assert {host for host, _ in sentinels} == {"sentinel-1", "sentinel-2", "sentinel-3"}
    assert {str(port) for _, port in sentinels} == set(directives["port"])
    assert match.group(2) == directives["monitor"][0]
    anchor = compose()["x-edge-env"]
    for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"):
        assert anchor[name] == f"${{{name}:-}}", f"{name}: empty by default (a single Redis)"


# --- Prometheus / Grafana -------------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def query_panels() -> list[dict[str, Any]]:
    """Panels that query a datasource (row headers do not)."""
    return [p for p in dashboard_panels() if p["type"] != "row"]


def test_prometheus_scrapes_front_and_every_worker_pool() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    front = jobs["edge-front"]
    assert front.get("metrics_path", "/metrics") in routes()
    assert ["front:8080"] in [sc["targets"] for sc in front["static_configs"]]
    [dns] = jobs["edge-workers"]["dns_sd_configs"]
    assert set(dns["names"]) == set(WORKER_SERVICES)
    assert dns["type"] == "A"
    assert dns["port"] == 9100


def test_grafana_provisioning_matches_compose_mounts() -> None:
    datasources = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    [ds] = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((OPS / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    [provider] = providers["providers"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services()["grafana"]["volumes"]}
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert services()["prometheus"]["volumes"][0].startswith("./ops/prometheus/prometheus.yml:")

    panels = query_panels()
    uids = {p["datasource"]["uid"] for p in panels}
    uids |= {t["datasource"]["uid"] for p in panels for t in p["targets"]}
    assert uids == {ds["uid"]}


def test_dashboard_uses_only_defined_metrics() -> None:
    exprs = [t["expr"] for p in query_panels() for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bllm_edge_[a-z0-9_]+\b", e)}
    assert used, "the dashboard queries no llm_edge_* metric"
    unknown = used - defined_metrics() - PLANNED_METRICS
    assert not unknown, f"not defined in edge_front/metrics.py or edge_workers/metrics.py: {unknown}"
    wanted = {
        "llm_edge_requests_total",
        "llm_edge_request_duration_ms_bucket",
        "llm_edge_cache_hits_total",
        "llm_edge_cache_misses_total",
        "llm_edge_tokens_total",
        "llm_edge_active_requests",
        "llm_edge_queue_wait_ms_bucket",
        "llm_edge_worker_jobs_total",
        "llm_edge_queue_depth",
        "llm_edge_provider_available",
        "llm_edge_breaker_state",
        "llm_edge_attempts_total",
        "llm_edge_fallbacks_total",
        "llm_edge_streams_total",
        "llm_edge_client_disconnects_total",
    }
    assert wanted <= used, f"panels missing for {wanted - used}"


def test_dashboard_layout() -> None:
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for y in range(pos["y"], pos["y"] + pos["h"]):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert "Routing and resilience" in rows


def test_dashboard_gauges_aggregate_across_fronts() -> None:
    """Every front reports the same queue depth and its own view of the breakers: never sum them."""
    exprs = " ".join(t["expr"] for p in query_panels() for t in p["targets"])
    assert "max by (provider) (llm_edge_queue_depth)" in exprs
    assert "min by (provider) (llm_edge_provider_available)" in exprs
    assert "max by (deployment) (llm_edge_breaker_state)" in exprs
    [breaker] = [p for p in query_panels() if "llm_edge_breaker_state" in p["targets"][0]["expr"]]
    [mapping] = breaker["fieldConfig"]["defaults"]["mappings"]
    states = {k: (v["text"], v["color"]) for k, v in mapping["options"].items()}
    assert states == {"0": ("closed", "green"), "1": ("half-open", "yellow"), "2": ("open", "red")}


# --- Kubernetes -----------------------------------------------------------------------------------


def test_k8s_documents_parse_and_kustomization_lists_them() -> None:
    files = {path.name for path in K8S.glob("*.yaml")}
    for name, doc in k8s_documents():
        assert {"apiVersion", "kind"} <= set(doc), name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], name
            assert "namespace" not in doc["metadata"], f"{name}: manifests are namespace-less"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert resources <= files
    # Everything is applied except the placeholder Secret, which must never be.
    assert resources == files - {"kustomization.yaml", "secret.example.yaml"}
    [secret] = [doc for name, doc in k8s_documents() if name == "secret.example.yaml"]
    assert all("REPLACE-ME" in v for v in secret["stringData"].values())


def test_k8s_commands_are_real_subcommands() -> None:
    containers = k8s_edge_containers()
    assert {name for name, _, _ in containers} == {"front", *WORKER_SERVICES}
    for name, _, container in containers:
        args = parse_cli(k8s_cli_args(container), f"k8s Deployment {name}")
        if name == "front":
            assert args.command == "front"
        else:
            assert (args.command, args.provider) == ("worker", WORKER_SERVICES[name])


def test_k8s_env_names_are_read_by_the_code() -> None:
    known = code_env_vars()
    configmaps = k8s_objects("ConfigMap")
    [secret] = [doc for name, doc in k8s_documents() if name == "secret.example.yaml"]
    for name, _, container in k8s_edge_containers():
        for var in container.get("env", []):
            assert var["name"] in known, f"k8s {name}: {var['name']} is not read by the code"
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"], f"k8s {name}: no key {ref['key']} in the Secret"
        for source in container.get("envFrom", []):
            configmap = configmaps[source["configMapRef"]["name"]]
            for key in configmap["data"]:
                assert key in known, f"ConfigMap {configmap['metadata']['name']}: {key} is not read"
    assert set(secret["stringData"]) <= known


def test_k8s_front_deployment() -> None:
    front = k8s_objects("Deployment")["front"]
    assert front["spec"]["replicas"] == 2
    [container] = front["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"/health/ready", "/health/live"} <= routes()
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert "limits" in container["resources"]
    service = k8s_objects("Service")["front"]
    assert service["spec"]["selector"].items() <= front["spec"]["template"]["metadata"]["labels"].items()

    hpa = k8s_objects("HorizontalPodAutoscaler")["front"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "front"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_k8s_model_list_is_a_valid_edge_config(tmp_path: Path) -> None:
    env = k8s_objects("ConfigMap")["edge-env"]["data"]
    models = k8s_objects("ConfigMap")["edge-models"]
    path = Path(env["EDGE_CONFIG"])
    assert path.name in models["data"], "EDGE_CONFIG must name a key of the edge-models ConfigMap"
    for name, pod, container in k8s_edge_containers():
        volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "edge-models")
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
        assert mount["mountPath"] == str(path.parent), f"k8s {name}: models.yaml is not at EDGE_CONFIG"
    copy = tmp_path / path.name
    copy.write_text(models["data"][path.name])
    deployments, _ = load_config_file(str(copy), {})
    assert {d.provider for d in deployments} == set(PROVIDERS)


def test_keda_scales_each_worker_pool_on_its_own_queue() -> None:
    deployments = k8s_objects("Deployment")
    redis_service = k8s_objects("Service")["redis"]
    redis_port = redis_service["spec"]["ports"][0]["port"]
    scaled = k8s_objects("ScaledObject")
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()}
    assert targets == set(WORKER_SERVICES), "one ScaledObject per worker Deployment"
    for name, so in scaled.items():
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        [container] = target["spec"]["template"]["spec"]["containers"]
        provider = parse_cli(k8s_cli_args(container), f"k8s {name}").provider
        [trigger] = so["spec"]["triggers"]
        # KEDA's `redis` scaler counts a sorted set with ZCARD (it checks the key's TYPE).
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == keyspace.queue(provider)
        host, _, port = trigger["metadata"]["address"].rpartition(":")
        assert host.split(".")[0] == redis_service["metadata"]["name"]
        assert int(port) == redis_port
        assert int(trigger["metadata"]["listLength"]) > 0
        assert so["spec"]["minReplicaCount"] >= 1


def test_k8s_pods_get_longer_than_the_drain_to_stop() -> None:
    """SIGTERM drains for EDGE_DRAIN_S; Kubernetes kills the pod after its grace period (30 s
    when unset), so the grace must be longer or the drain is cut short."""
    drain_s = int(k8s_objects("ConfigMap")["edge-env"]["data"]["EDGE_DRAIN_S"])
    containers = k8s_edge_containers()
    assert containers
    for name, pod, _ in containers:
        assert pod.get("terminationGracePeriodSeconds", 30) > drain_s, name


def test_dashboard_shows_stream_latency_and_live_workers() -> None:
    exprs = " ".join(t["expr"] for p in query_panels() for t in p["targets"])
    for metric in (
        "llm_edge_stream_ttft_ms_bucket",
        "llm_edge_stream_chunk_gap_ms_bucket",
        "llm_edge_live_workers",
    ):
        assert metric in exprs, metric


# Kinds without a schema in kubernetes-validate (custom resources, kustomize's own file); their
# structure is checked by the tests above.
UNSCHEMED_KINDS = {"ScaledObject", "Kustomization"}
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())  # the oldest supported, the newest


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_pass_strict_schema_validation(version: str) -> None:
    """As `kubernetes-validate --strict -k VERSION ops/k8s/*.yaml` does: every field known to the
    Kubernetes API of that version, none misspelt or misplaced."""
    checked = set()
    for name, doc in k8s_documents():
        if doc["kind"] in UNSCHEMED_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} against {version}: {e.message}")
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= checked


def test_strict_validation_catches_a_misplaced_field() -> None:
    front = copy.deepcopy(k8s_objects("Deployment")["front"])
    front["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(front, K8S_VERSIONS[-1], strict=True)


def test_k8s_a_disruption_budget_per_tier() -> None:
    """The front and each worker pool have a budget that selects exactly their pods; Redis (one
    pod) has none, which would block every node drain."""
    pod_labels = {
        name: d["spec"]["template"]["metadata"]["labels"] for name, d in k8s_objects("Deployment").items()
    }
    covered = {}
    for pdb in k8s_objects("PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        [target] = [d for d, labels in pod_labels.items() if selector.items() <= labels.items()]
        covered[target] = pdb["spec"]
    assert set(covered) == {"front", *WORKER_SERVICES}
    assert covered["front"].get("minAvailable") == 1
    for worker in WORKER_SERVICES:  # a pool scaled to one must still be drainable
        assert covered[worker].get("maxUnavailable") == 1 and "minAvailable" not in covered[worker]
