"""deploy/: each file checked as far as this machine allows.

No container engine runs here, so the image is not built: its start command,
environment and health check are read from the Dockerfile and run directly
against deploy/gateway.yaml, on real Redis and MariaDB. The compose file and
the Kubernetes manifests are parsed and checked against the gateway's own
configuration; the systemd unit is checked by `systemd-analyze verify`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_config
from tests.factories import SECRET
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.stores("embedded")  # the stores are chosen here
ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def dockerfile() -> dict[str, Any]:
    """ENV, ENTRYPOINT, CMD, EXPOSE and HEALTHCHECK of the final stage."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    found: dict[str, Any] = {"env": {}, "expose": []}
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            found["env"].update(dict(part.split("=", 1) for part in shlex.split(rest)))
        elif word in ("ENTRYPOINT", "CMD"):
            found[word.lower()] = yaml.safe_load(rest)
        elif word == "EXPOSE":
            found["expose"] += [int(port) for port in rest.split()]
        elif word == "HEALTHCHECK":
            found["healthcheck"] = yaml.safe_load(rest[rest.index("CMD ") + 4:])
        elif word == "USER":
            found["user"] = rest
    return found


def test_the_images_start_command_serves_the_shipped_config(tmp_path: Path, stub: str, real_redis_url: str,
                                                            real_mysql_url: str) -> None:
    image = dockerfile()
    assert image["user"] not in ("root", "0")
    assert set(image["expose"]) == {8000, 8001}
    assert image["env"]["GATEWAY_ADMIN_HOST"] == "0.0.0.0"  # in the container; deploy/gateway.yaml's own is loopback
    shipped = parse_config(yaml.safe_load((DEPLOY / "gateway.yaml").read_text()), env={"GATEWAY_JWT_SECRET": SECRET})
    assert shipped.admin is not None and shipped.admin.host == "127.0.0.1"  # systemd: not on the public network
    config_path = image["env"]["GATEWAY_CONFIG"]
    assert config_path == "/etc/toutiao-gateway/gateway.yaml"
    assert f"COPY deploy/gateway.yaml {config_path}" in (DEPLOY / "Dockerfile").read_text()
    port, admin = free_port(), free_port()
    env = {**os.environ, **image["env"], "GATEWAY_CONFIG": str(DEPLOY / "gateway.yaml"),
           # loopback here; in the container the file's 0.0.0.0 applies
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "GATEWAY_ADMIN_HOST": "127.0.0.1",
           "GATEWAY_ADMIN_PORT": str(admin), "GATEWAY_JWT_SECRET": SECRET, "GATEWAY_REDIS_URL": real_redis_url,
           "GATEWAY_DATABASE_URL": real_mysql_url, "GATEWAY_NEWS_URL": stub}
    console = Path(sys.executable).parent / image["entrypoint"][0]  # the console script pip installed
    migrate = subprocess.run([str(console), "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    log = (tmp_path / "gateway.log").open("w")
    proc = subprocess.Popen([str(console), *image["entrypoint"][1:], *image["cmd"]], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(admin)
        wait_for_port(port)
        health = image["healthcheck"]
        assert health[0] == "python"
        checked = subprocess.run([sys.executable, *health[1:]], env=env, timeout=30)
        assert checked.returncode == 0  # the HEALTHCHECK, as the engine would run it
        deadline = time.monotonic() + 15
        ready = b""
        while time.monotonic() < deadline and b'"ready"' not in ready:
            try:
                ready = urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).read()
            except OSError:
                time.sleep(0.2)
        assert ready == b'{"status": "ready"}'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1_0/channels", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert proc.wait(40) == 0  # SIGTERM drains and exits 0
    assert '"level": "ERROR"' not in (tmp_path / "gateway.log").read_text()


def test_the_compose_file_wires_the_services_the_config_names() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "mariadb", "upstream_stub", "migrate", "gateway"}
    config = parse_config(yaml.safe_load((DEPLOY / "gateway.yaml").read_text()),
                          env={"GATEWAY_JWT_SECRET": SECRET})
    gateway = services["gateway"]
    published = {entry.rsplit(":", 1)[-1]: entry for entry in gateway["ports"]}
    assert set(published) == {str(config.server.port), str(config.admin.port if config.admin else None)}
    assert published[str(config.admin.port if config.admin else 0)].startswith("127.0.0.1:")  # not public
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["mariadb"] == {"condition": "service_healthy"}
    # the hosts in the config are the services' names, on their ports
    assert config.redis.url == "redis://redis:6379/0" and "redis" in gateway["depends_on"]
    assert "@mariadb:3306/" in config.database.url
    mariadb = services["mariadb"]["environment"]
    assert config.database.url.endswith(f"/{mariadb['MARIADB_DATABASE']}")
    assert f"{mariadb['MARIADB_USER']}:{mariadb['MARIADB_PASSWORD']}@" in config.database.url
    stub = services["upstream_stub"]["entrypoint"]
    assert config.upstreams["news"].targets[0].url == f"http://upstream_stub:{stub[stub.index('--port') + 1]}"
    assert "GATEWAY_JWT_SECRET" in gateway["environment"]
    for name in ("upstream_stub", "migrate", "gateway"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_the_kubernetes_sidecar_probes_the_admin_port_and_hides_the_service() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "news-with-gateway.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in documents}
    assert set(by_kind) == {"Secret", "ConfigMap", "Deployment", "Service"}
    secret = by_kind["Secret"]["stringData"]
    raw = yaml.safe_load(by_kind["ConfigMap"]["data"]["gateway.yaml"])
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    news, gateway = (next(c for c in pod["containers"] if c["name"] == name) for name in ("news", "gateway"))
    env = {item["name"]: secret[item["valueFrom"]["secretKeyRef"]["key"]] for item in gateway["env"]}
    config = parse_config(raw, env=env)
    assert config.jwt.signing_key.signing == secret["jwt-secret"]
    assert config.redis.url == secret["redis-url"] and config.database.url == secret["database-url"]
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"http": config.server.port, "admin": config.admin.port if config.admin else None}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert config.admin is not None and gateway["readinessProbe"]["timeoutSeconds"] > config.admin.probe_timeout
    assert config.server.shutdown_timeout < pod["terminationGracePeriodSeconds"]
    # the gateway forwards to the news container in the same pod; the Service reaches only the gateway
    news_port = news["ports"][0]["containerPort"]
    assert [t.url for t in config.upstreams["news"].targets] == [f"http://127.0.0.1:{news_port}"]
    assert [p["targetPort"] for p in by_kind["Service"]["spec"]["ports"]] == ["http"]
    mounted = {m["mountPath"]: m["name"] for m in gateway["volumeMounts"]}
    assert gateway["args"][-1].startswith(next(p for p, n in mounted.items() if n == "config"))
    assert gateway["securityContext"]["runAsNonRoot"] and gateway["securityContext"]["readOnlyRootFilesystem"]
    assert "/tmp" in mounted  # the supervisor's metrics directory, with workers


def test_the_systemd_unit_verifies_and_reloads_with_sighup(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "toutiao-gateway.service").read_text()
    keys: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    assert keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert keys["KillSignal"] == ["SIGTERM"]
    assert keys["ExecStart"][0].endswith("toutiao-gateway run")
    assert keys["ExecStartPre"][0].endswith("toutiao-gateway check-config")
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome", "RestrictAddressFamilies"):
        assert hardening in keys
    timeout = int(keys["TimeoutStopSec"][0])
    config = parse_config(yaml.safe_load((DEPLOY / "gateway.yaml").read_text()), env={"GATEWAY_JWT_SECRET": SECRET})
    assert config.server.shutdown_timeout < timeout
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify needs the programs it names to exist: point them at this machine's console script
    console = Path(sys.executable).parent / "toutiao-gateway"
    local = re.sub(r"/opt/toutiao-gateway/bin/toutiao-gateway", str(console), unit)

    def verify(text: str) -> list[str]:
        """What systemd-analyze says of the unit (it exits 0 even for unknown keys: its words are the test)."""
        path = tmp_path / "toutiao-gateway.service"
        path.write_text(text)
        result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
        return [line for line in result.stderr.splitlines() if path.name in line] + (
            [f"exit {result.returncode}"] if result.returncode else [])

    assert verify(local) == []
    assert verify(local.replace("ProtectSystem=strict", "ProtectSystem=bogus\nBogusKey=1"))  # the check sees
