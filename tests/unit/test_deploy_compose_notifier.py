"""docker-compose.yml runs the notifier as issue 12 asks: same image, its profile, every target
variable passed through, reachable by Prometheus (no Docker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from journeywatch.notifier.settings import NotifierSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_notifier_runs_the_module_from_the_shared_image_in_its_own_profile() -> None:
    notifier = SERVICES["notifier"]
    assert notifier["command"] == ["python", "-m", "journeywatch.notifier"]
    assert notifier["image"] == SERVICES["ingest"]["image"]
    assert notifier["profiles"] == ["notify"]  # only with a target: COMPOSE_PROFILES=notify
    assert notifier["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_every_target_and_routing_variable_is_passed_through() -> None:
    environment = SERVICES["notifier"]["environment"]
    for name in (
        "notify_webhook_urls",
        "notify_secret",
        "notify_slack_webhook_url",
        "notify_pagerduty_routing_key",
        "notify_min_severity",
        "notify_journeys",
        "notify_map_base_url",
    ):
        assert name in NotifierSettings.model_fields, name
        variable = f"JOURNEYWATCH_{name.upper()}"
        assert environment[variable].startswith(f"${{{variable}:-"), variable
    assert (
        environment["JOURNEYWATCH_NOTIFY_MIN_SEVERITY"]
        == "${JOURNEYWATCH_NOTIFY_MIN_SEVERITY:-warning}"
    )


def test_prometheus_reaches_the_notifier_exporter() -> None:
    port = NotifierSettings.model_fields["notifier_metrics_port"].default
    assert str(port) in SERVICES["notifier"]["expose"]
    assert f":{port}/metrics" in " ".join(SERVICES["notifier"]["healthcheck"]["test"])
    # The exporter binds loopback by default: the image must open it to the compose network.
    assert "JOURNEYWATCH_NOTIFIER_METRICS_HOST=0.0.0.0" in DOCKERFILE
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    sd = jobs["journeywatch-notifier"]["dns_sd_configs"][0]
    assert (sd["names"], sd["port"]) == (["notifier"], port)
