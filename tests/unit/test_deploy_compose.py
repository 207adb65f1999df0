"""docker-compose.yml, without Docker: it parses, references files that exist, and its services,
healthchecks, dependencies, environment and the Prometheus/Grafana wiring agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
APP_SERVICES = {
    "migrate": "journeywatch.shared.db",
    "ingest": "journeywatch.ingest",
    "detector": "journeywatch.detector",
    "api": "journeywatch.api",
}


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount (short syntax, relative host path)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((REPO / source).resolve(), target))
    return mounts


def test_expected_services() -> None:
    assert set(SERVICES) >= {
        "kafka", "db", "migrate", "ingest", "detector", "api",
        "prometheus", "alertmanager", "grafana",
    }  # fmt: skip


def test_bind_mounts_and_build_contexts_exist() -> None:
    for name, service in SERVICES.items():
        for host, _ in bind_mounts(service):
            assert host.exists(), f"{name}: {host} does not exist"
            assert REPO in host.parents, f"{name}: mounts {host} from outside the repo"
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert context.is_dir(), name
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
    named = {
        v.split(":")[0]
        for s in SERVICES.values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert named <= set(COMPOSE.get("volumes") or {}), "undeclared named volumes"


def test_depends_on_is_consistent() -> None:
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # short syntax: plain "started"
            depends_on = dict.fromkeys(depends_on, "service_started")
        for dependency, spec in depends_on.items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            condition = spec["condition"] if isinstance(spec, dict) else "service_started"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert SERVICES[dependency].get("restart") == "no", dependency


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name == "migrate":
            assert "healthcheck" not in service
            continue
        test = service["healthcheck"]["test"]
        assert isinstance(test, list)
        assert test[0] in {"CMD", "CMD-SHELL"}, name


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_share_one_image_and_run_their_module(name: str) -> None:
    service = SERVICES[name]
    assert service["build"]["context"] == "."
    assert service["image"] == SERVICES["api"]["image"]
    command = service["command"]
    assert command[:3] == ["python", "-m", APP_SERVICES[name]]
    if name == "migrate":
        assert command[3:] == ["migrate"]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
    else:
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_environment(name: str) -> None:
    env = SERVICES[name]["environment"]
    assert env["JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert re.fullmatch(
        r"postgresql\+asyncpg://journeywatch:\S+@db:5432/journeywatch",
        env["JOURNEYWATCH_DATABASE_URL"],
    )
    assert env["JOURNEYWATCH_PSEUDONYMIZATION_KEY"]


@pytest.mark.parametrize(
    ("name", "port", "path"),
    [("ingest", 8001, "/readyz"), ("api", 8000, "/readyz"), ("detector", 9102, "/metrics")],
)
def test_app_healthchecks_probe_their_port(name: str, port: int, path: str) -> None:
    assert f"http://127.0.0.1:{port}{path}" in " ".join(SERVICES[name]["healthcheck"]["test"])


def test_detector_runs_exactly_one_replica() -> None:
    # One checkpoint per consumer group: a second replica refuses to start (issue 11 item 10),
    # so the compose file must neither run nor advertise more than one. The only `--scale` it
    # may advertise for the one-process detector is 0 (the scale-out profile's stages instead).
    detector = SERVICES["detector"]
    assert "ports" not in detector
    assert detector["deploy"]["replicas"] == 1
    scales = re.findall(r"--scale\s+([\w-]+)=(\d+)", (REPO / "docker-compose.yml").read_text())
    assert ("detector", "0") in scales
    assert all(count == "0" for name, count in scales if name == "detector"), scales


def test_host_ports_are_loopback_and_unique() -> None:
    seen = set()
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            host_ip, host_port, _ = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert host_port not in seen
            seen.add(host_port)


def test_kafka_is_single_node_kraft_with_in_compose_listener() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"


def test_postgres_16() -> None:
    db = SERVICES["db"]
    assert db["image"].split(":")[1].split(".")[0] == "16"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_prometheus_gets_the_shipped_config_and_rules() -> None:
    mounts = dict(bind_mounts(SERVICES["prometheus"]))
    config_target = mounts[(REPO / "deploy/prometheus/prometheus.yml").resolve()]
    assert f"--config.file={config_target}" in SERVICES["prometheus"]["command"]
    rules_target = mounts[(REPO / "deploy/prometheus/rules").resolve()]
    config_dir = str(Path(config_target).parent)
    for pattern in PROMETHEUS["rule_files"]:
        resolved = pattern if pattern.startswith("/") else f"{config_dir}/{pattern}"
        assert resolved.startswith(rules_target + "/"), (pattern, rules_target)


def test_prometheus_scrapes_the_compose_services() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert jobs["journeywatch-ingest"]["static_configs"][0]["targets"] == ["ingest:8001"]
    assert jobs["journeywatch-api"]["static_configs"][0]["targets"] == ["api:8000"]
    detector_sd = jobs["journeywatch-detector"]["dns_sd_configs"][0]
    assert detector_sd["names"][0] == "detector"  # the stages: test_deploy_compose_stages.py
    assert detector_sd["port"] == 9102
    for name in detector_sd["names"]:
        assert name in SERVICES, name
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in SERVICES, target
    (alertmanagers,) = PROMETHEUS["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_alertmanager_and_grafana_get_the_shipped_files() -> None:
    am_mounts = dict(bind_mounts(SERVICES["alertmanager"]))
    am_target = am_mounts[(REPO / "deploy/alertmanager/alertmanager.yml").resolve()]
    assert f"--config.file={am_target}" in SERVICES["alertmanager"]["command"]

    grafana_mounts = dict(bind_mounts(SERVICES["grafana"]))
    assert grafana_mounts[(REPO / "deploy/grafana/provisioning").resolve()] == (
        "/etc/grafana/provisioning"
    )
    dashboards_target = grafana_mounts[(REPO / "deploy/grafana/dashboards").resolve()]
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/journeywatch.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == dashboards_target
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_target + "/")
    assert (REPO / "deploy/grafana/dashboards" / Path(home).name).is_file()
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
