"""docker-compose.yml's structure: health checks, images from the root Dockerfile, the
commands the services run, and variables that the settings classes really read."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from podpulse.common.settings import KNOWN_SECRETS, settings_variable
from podpulse.common.settings_doc import installed_settings

ROOT = Path(__file__).resolve().parent.parent
# ruamel.yaml comes with check-jsonschema, the dev group's compose validator.
_YAML = YAML(typ="safe")
COMPOSE = _YAML.load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
# Variables docker compose itself reads, or that only the compose file uses.
COMPOSE_ONLY = {"COMPOSE_PROFILES", "OTELCOL_OVERLAY"}
# Standard variables of images that are not podpulse's (Jaeger).
FOREIGN = {"COLLECTOR_OTLP_ENABLED"}
PODPULSE_BUILT = {"twin", "prober-worker", "prober-beat", "alerter", "alerter-worker",
                  "tagger-worker"}  # fmt: skip


def _settings_variables() -> set[str]:
    names = {s.name for s in KNOWN_SECRETS} | {s.file_variable for s in KNOWN_SECRETS}
    for _, cls in installed_settings():
        names |= {settings_variable(cls, field) for field in cls.model_fields}
    return names


def test_every_service_has_a_health_check_or_says_why_not() -> None:
    """A health check on each service, or an x-healthcheck-reason explaining its absence."""
    for name, service in SERVICES.items():
        assert "healthcheck" in service or service.get("x-healthcheck-reason"), name


def test_dependencies_wait_on_conditions() -> None:
    """Every depends_on names a condition, and every service on the bus waits for a healthy
    Redis."""
    for name, service in SERVICES.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            assert spec.get("condition") in ("service_healthy", "service_started"), (name, dep)
        if name in PODPULSE_BUILT or name == "flower":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_podpulse_images_are_built_from_the_root_dockerfile() -> None:
    """Each podpulse service builds the root Dockerfile with its service as the build arg, and
    the Dockerfile takes that arg; the GPU worker image is not part of the stack."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG PODPULSE_SERVICE" in dockerfile
    for name in PODPULSE_BUILT:
        build = SERVICES[name]["build"]
        assert build["context"] == "."
        assert (ROOT / build["dockerfile"]).is_file()
        assert build["dockerfile"] == "Dockerfile"
        service = build["args"]["PODPULSE_SERVICE"]
        assert SERVICES[name]["image"] == f"podpulse-{service}:dev"
    assert not any("services/worker" in str(s.get("build", "")) for s in SERVICES.values())


def test_the_services_run_the_commands_their_issues_name() -> None:
    """The alerter and tagger run the commands of issues 10 and 11; the prober runs one beat."""
    assert SERVICES["alerter"]["command"] == [
        "podpulse", "alerter", "serve", "--host", "0.0.0.0", "--port", "4318"]  # fmt: skip  # noqa: S104
    assert SERVICES["tagger-worker"]["command"][:4] == ["python", "-m", "podpulse.tagger", "worker"]
    assert SERVICES["prober-beat"]["command"][:4] == ["python", "-m", "podpulse.prober", "beat"]
    assert "deploy:" not in (ROOT / "docker-compose.yml").read_text()  # no replicas of beat
    assert SERVICES["jaeger"]["profiles"] == ["traces"]
    collector = _YAML.load((ROOT / "deploy/otel-collector.yaml").read_text())
    assert collector["exporters"]["otlphttp/alerter"]["endpoint"] == "http://alerter:4318"


def test_variables_are_the_settings_variable_names() -> None:
    """Every variable a service sets or the file interpolates is one a settings class reads
    (or a secret, a standard OTEL_* one, or compose's own), and .env.example lists each."""
    known = _settings_variables()
    text = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    env_example = (ROOT / ".env.example").read_text()
    for variable in interpolated:
        assert variable in known | COMPOSE_ONLY, variable
        assert re.search(rf"^#? ?{variable}=", env_example, re.M), variable
    for name, service in SERVICES.items():
        for variable in service.get("environment") or {}:
            if variable.startswith("OTEL_"):
                continue  # the OpenTelemetry SDK's own (OTEL_SERVICE_NAME, endpoint, ...)
            assert variable in known | FOREIGN, (name, variable)


def test_ports_match_the_settings() -> None:
    """The twin's and alerter's ports are the ones podpulse up and the settings use."""
    from podpulse.stack.settings import StackSettings
    from podpulse.twin.settings import TwinSettings

    assert "127.0.0.1:8765:8765" in SERVICES["twin"]["ports"]
    assert TwinSettings.model_fields["port"].default == 8765
    assert StackSettings.model_fields["otlp_port"].default == 4318
    assert "--port" in SERVICES["alerter"]["command"]


def test_env_example_is_generated_from_the_settings() -> None:
    """.env.example is what scripts/env-example renders now (a new setting means a rerun)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/env-example"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_compose_file_validates_offline() -> None:
    """check-jsonschema validates against the Compose Spec schema it vendors, with no network
    (a private network namespace where unshare can make one; plainly elsewhere)."""
    checker = str(Path(sys.executable).with_name("check-jsonschema"))
    argv = [checker, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")]
    offline = None
    if shutil.which("unshare"):
        offline = subprocess.run(["unshare", "-rn", *argv], capture_output=True, text=True)
    if offline is None or (offline.returncode != 0 and "unshare" in offline.stderr):
        offline = subprocess.run(argv, capture_output=True, text=True)  # no user namespaces
    assert offline.returncode == 0, offline.stdout + offline.stderr
