"""compose.yaml cannot run here (no Docker engine), so its shape is checked:
every service has an image or a build, every long-running service a health
check, the documented ports are published, and start order is expressed with
health conditions."""

from __future__ import annotations

import yaml

from conftest import ROOT

DOCUMENTED_PORTS = {
    "kafka": {9092},
    "cassandra": {9042},
    "elasticsearch": {9200},
    "kibana": {5601},
    "opensearch": {9200},
    "opensearch-dashboards": {5601},
    "spark-master": {7077},
    "fraudflight": {50051, 8080},
}
ONE_SHOT = {"init-kafka", "init-cassandra", "init-search", "import-kibana", "import-opensearch-dashboards"}


def load() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def published(service: dict) -> set[int]:
    return {int(str(p).split(":")[0]) for p in service.get("ports", [])}


def test_every_service_has_an_image_or_build_and_long_runners_a_healthcheck() -> None:
    services = load()["services"]
    assert set(DOCUMENTED_PORTS) | ONE_SHOT <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
        else:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"


def test_documented_ports_are_published() -> None:
    services = load()["services"]
    for name, ports in DOCUMENTED_PORTS.items():
        assert ports <= published(services[name]), f"{name} publishes {published(services[name])}, expected {ports}"


def test_start_order_uses_health_and_completion_conditions() -> None:
    services = load()["services"]
    conditions = {"service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in conditions, f"{name} -> {dep}: {spec}"
    assert services["fraudflight"]["depends_on"]["init-kafka"]["condition"] == "service_completed_successfully"
    assert services["kibana"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_profiles_pick_one_search_engine_each() -> None:
    services = load()["services"]
    assert services["elasticsearch"]["profiles"] == ["elastic"] == services["kibana"]["profiles"]
    assert services["opensearch"]["profiles"] == ["opensearch"] == services["opensearch-dashboards"]["profiles"]
    for engine in ("elasticsearch", "opensearch"):
        assert "search" in services[engine]["networks"]["default"]["aliases"]


def test_init_files_exist() -> None:
    for mount in ("cassandra.cql", "opensearch-template.json"):
        assert (ROOT / "scripts" / "schema" / mount).is_file()
    assert (ROOT / "Dockerfile").is_file()


def test_the_dashboards_are_imported_once_each_ui_is_healthy() -> None:
    services = load()["services"]
    for ui, importer in (("kibana", "import-kibana"), ("opensearch-dashboards", "import-opensearch-dashboards")):
        service = services[importer]
        assert service["depends_on"][ui]["condition"] == "service_healthy"
        assert service["profiles"] == services[ui]["profiles"]
        mounts = {m.split(":")[0] for m in service["volumes"]}
        assert mounts == {"./dashboards", "./scripts"}
        assert service["command"][1] == "/fraudflight/scripts/import-dashboards.sh"
        assert service["command"][-1] == ui
        assert (ROOT / "dashboards" / ui).is_dir()


def test_retraining_runs_daily_against_the_stack() -> None:
    services = load()["services"]
    retrain = services["retrain"]
    command = " ".join(retrain["command"])
    assert "retrain.py" in command and "sleep 86400" in command
    assert "--source cassandra://cassandra:9042/fraudflight" in command
    assert "--endpoint grpc://fraudflight:50051" in command
    assert retrain["depends_on"]["fraudflight"]["condition"] == "service_healthy"
    assert "retrained-models" in load()["volumes"]
    assert (ROOT / "spark-job" / "retrain.py").is_file() and (ROOT / "spark-job" / "requirements.txt").is_file()
