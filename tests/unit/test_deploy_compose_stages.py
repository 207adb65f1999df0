"""docker-compose.yml runs the detector's two stages (issue 13) as an opt-in, scalable profile
beside the default one-process detector, and Prometheus scrapes them (no Docker needed)."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from journeywatch.detector.settings import DetectorSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
SERVICES: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE_TEXT)["services"]
PROMETHEUS = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
RULES = (REPO / "deploy/prometheus/rules/journeywatch.yml").read_text()
STAGES = {"detector-sessionize": "sessionize", "detector-score": "score"}
METRICS_PORT = DetectorSettings.model_fields["detector_metrics_port"].default


@pytest.mark.parametrize(("name", "stage"), sorted(STAGES.items()))
def test_stage_services_run_the_detector_module_with_their_stage(name: str, stage: str) -> None:
    service = SERVICES[name]
    assert service["command"] == ["python", "-m", "journeywatch.detector", "--stage", stage]
    assert stage in typing.get_args(DetectorSettings.model_fields["detector_stage"].annotation)
    assert service["image"] == SERVICES["detector"]["image"]
    assert service["build"] == SERVICES["detector"]["build"]
    assert service["profiles"] == ["scale-out"]  # opt-in: `docker compose --profile scale-out`


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_services_share_the_app_environment(name: str) -> None:
    env = SERVICES[name]["environment"]
    for variable, value in SERVICES["detector"]["environment"].items():
        assert env[variable] == value, variable
    assert env["JOURNEYWATCH_DATABASE_URL"].startswith("postgresql+asyncpg://")  # not SQLite
    default = DetectorSettings.model_fields["detector_partials_partitions"].default
    assert env["JOURNEYWATCH_DETECTOR_PARTIALS_PARTITIONS"] == (
        f"${{JOURNEYWATCH_DETECTOR_PARTIALS_PARTITIONS:-{default}}}"
    )
    assert "JOURNEYWATCH_DETECTOR_STAGE" not in env  # the command says the stage


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_services_are_scalable(name: str) -> None:
    service = SERVICES[name]
    # `--scale` needs generated container names and no fixed host port.
    assert "container_name" not in service
    assert "ports" not in service
    assert "replicas" not in service.get("deploy", {})
    assert service["restart"] == SERVICES["detector"]["restart"]
    assert service["stop_grace_period"] == SERVICES["detector"]["stop_grace_period"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_services_wait_like_the_detector_and_expose_its_exporter(name: str) -> None:
    service = SERVICES[name]
    assert service["depends_on"] == SERVICES["detector"]["depends_on"]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["expose"] == [str(METRICS_PORT)]
    assert service["healthcheck"] == SERVICES["detector"]["healthcheck"]
    assert f"http://127.0.0.1:{METRICS_PORT}/metrics" in " ".join(service["healthcheck"]["test"])
    # The exporter binds loopback by default: the image must open it to the compose network.
    assert "JOURNEYWATCH_DETECTOR_METRICS_HOST=0.0.0.0" in (REPO / "Dockerfile").read_text()


def test_the_one_process_detector_stays_the_default_and_is_scaled_to_zero_with_the_stages() -> None:
    detector = SERVICES["detector"]
    assert "profiles" not in detector  # `docker compose up` runs it, and only it
    assert detector["command"] == ["python", "-m", "journeywatch.detector"]
    # Both at once would store and publish the same anomalies from two consumer groups: the
    # advertised scale-out command scales `detector` to 0.
    header = "".join(
        line.lstrip("# ").rstrip("\\\n") + " "
        for line in COMPOSE_TEXT.splitlines(keepends=True)
        if line.startswith("#")
    )
    (command,) = re.findall(r"docker compose --profile scale-out up [^`]*?(?=Sessionize:)", header)
    scales = dict(re.findall(r"--scale\s+([\w-]+)=(\d+)", command))
    assert scales["detector"] == "0"
    assert set(scales) == {"detector", *STAGES}
    assert all(int(scales[name]) >= 1 for name in STAGES)


def test_prometheus_scrapes_every_stage_replica_as_the_detector_job() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    job = jobs["journeywatch-detector"]
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A"  # one record per container: every `--scale` replica
    assert sd["port"] == METRICS_PORT
    assert set(sd["names"]) == {"detector", *STAGES}
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job[
        "relabel_configs"
    ]
    # The detector alerts select this job, so they cover the stages, and its `absent(up)` does
    # not fire while `detector` is scaled to 0.
    assert 'up{job="journeywatch-detector"} == 0' in RULES
    assert 'absent(up{job="journeywatch-detector"})' in RULES
    assert not any(name.startswith("journeywatch-detector-") for name in jobs)
