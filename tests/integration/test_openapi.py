"""docs/openapi.yaml against the running gateway: schemathesis generates requests for every operation,
and every answer must be documented (status, headers, body); the real success paths are checked too."""
from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import missing_required_header, positive_data_acceptance

from tests.processes import Running, gateway_raw

pytestmark = pytest.mark.stores("embedded")
ROOT = Path(__file__).parents[2]
DOCUMENT = ROOT / "docs" / "openapi.yaml"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One gateway for the module, on the embedded stores, with forward-auth open to loopback."""
    import subprocess
    import sys

    from tests.servers import free_port, wait_for_port

    folder = tmp_path_factory.mktemp("openapi")
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(port)], cwd=ROOT)
    wait_for_port(port)
    raw = gateway_raw(f"http://127.0.0.1:{port}", folder, trusted_proxies=["127.0.0.1/32"])
    gateway = Running(folder, raw)
    yield gateway
    gateway.stop()
    stub.terminate()
    stub.wait(10)


def test_the_served_document_is_the_one_in_docs(running: Running) -> None:
    served = requests.get(f"{running.url}/_gateway/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("application/json")
    assert served.json() == yaml.safe_load(DOCUMENT.read_text())
    assert served.json()["openapi"].startswith("3.1")


schema = schemathesis.openapi.from_path(DOCUMENT)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_is_documented(case: Any, running: Running) -> None:
    """Random paths, bodies, headers and methods of the documented operations: no 5xx (but the documented
    503), no status, header or body the document does not name, and a request the document calls valid is
    not refused as malformed. Two checks meet the seed's contract, which wins:"""
    excluded = []
    if (case.operation.method.upper(), case.operation.path) == ("POST", "/v1_0/authorizations"):
        excluded.append(positive_data_acceptance)  # a wrong code or password is 400; no schema tells them apart
    if (case.operation.method.upper(), case.operation.path) == ("PUT", "/v1_0/authorizations"):
        excluded.append(missing_required_header)  # refresh without a token is 403: the client goes to login
    case.call_and_validate(base_url=running.url, timeout=10, excluded_checks=excluded)


def test_the_success_paths_match_the_document(running: Running) -> None:
    """What random requests never reach: a code sent, a login, a refresh, a logout, a forward-auth pass."""
    url, mobile = running.url, "13912345678"

    def validated(method: str, path: str, response: requests.Response, **parameters: Any) -> requests.Response:
        """Every check schemathesis runs on its own requests: status, headers, body, content type."""
        schema[path][method].Case(**parameters).validate_response(response)
        return response

    code_path = "/v1_0/sms/codes/{mobile}"
    sent = validated("GET", code_path, requests.get(f"{url}/v1_0/sms/codes/{mobile}", timeout=10),
                     path_parameters={"mobile": mobile})
    assert sent.status_code == 200
    code = re.findall(rf"code for {mobile} is (\d{{6}})", running.log.read_text())[-1]
    login = validated("POST", "/v1_0/authorizations",
                      requests.post(f"{url}/v1_0/authorizations", json={"mobile": mobile, "code": code}, timeout=10))
    assert login.status_code == 201
    tokens = login.json()
    with_refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    with_access = {"Authorization": f"Bearer {tokens['token']}"}
    refresh = validated("PUT", "/v1_0/authorizations", requests.put(
        f"{url}/v1_0/authorizations", headers=with_refresh, timeout=10), headers=with_refresh)
    assert refresh.status_code == 201
    asked = {**with_access, "X-Forwarded-Uri": "/v1_0/user/profile", "X-Forwarded-Method": "GET"}
    passed = validated("GET", "/_gateway/auth", requests.get(f"{url}/_gateway/auth", headers=asked, timeout=10),
                       headers=asked)
    assert passed.status_code == 200 and passed.headers["X-User-Id"].isdigit()
    out = validated("DELETE", "/v1_0/authorizations", requests.delete(
        f"{url}/v1_0/authorizations", headers=with_refresh, timeout=10), headers=with_refresh)
    assert out.status_code == 204
    again = validated("PUT", "/v1_0/authorizations", requests.put(
        f"{url}/v1_0/authorizations", headers=with_refresh, timeout=10), headers=with_refresh)
    assert again.status_code == 403 and again.json() == {"message": "Wrong refresh token."}
    jwks = validated("GET", "/.well-known/jwks.json", requests.get(f"{url}/.well-known/jwks.json", timeout=10))
    assert jwks.json() == {"keys": []}
    wrong = requests.patch(f"{url}/v1_0/authorizations", timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST, PUT, DELETE"
    assert wrong.json() == {"message": "Method not allowed."}


def test_an_undocumented_answer_is_caught(running: Running) -> None:
    """The check itself can fail: a status the document does not name for an operation is refused."""
    response = requests.get(f"{running.url}/v1_0/sms/codes/13912345670", timeout=10)
    assert response.status_code == 200
    case = schema["/v1_0/sms/codes/{mobile}"]["GET"].Case(path_parameters={"mobile": "13912345670"})
    case.validate_response(response)  # as it came: documented
    response.status_code = 418
    with pytest.raises(FailureGroup) as caught:
        case.validate_response(response)
    assert "Undocumented status code" in "".join(traceback.format_exception(caught.value))
