"""The HTTP contract a client sees, on a real app over a real SQLite log (in process):
the OpenAPI document's security and error declarations, the API docs with no network,
and a body that is not declared JSON.

That every declared error really happens, with the declared body, is tested against a
running server: ``tests/e2e/test_schemathesis.py`` (and 503: ``test_disk_full.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import MAX_BATCH_SUBMIT_CEILING, Settings

ADMIN = {"Authorization": "Bearer admin-token-for-the-contract"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    system = bootstrap.build_system(Settings(store=f"sqlite:///{tmp_path / 'log.db'}"))
    system.start_background()
    try:
        app, _ = bootstrap.build_app(system, ADMIN["Authorization"].split()[1])
        with TestClient(app) as client:
            yield client
    finally:
        system.close()


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    }


def test_every_operation_declares_its_errors_with_the_one_error_body(http):
    doc = http.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(doc)  # FastAPI's 422 body is never sent
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {
        "error",
        "field",
        "message",
    }
    for name, operation in _operations(doc).items():
        errors = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
        if name == "GET /healthz":
            assert not errors and "security" not in operation
            continue
        assert "401" in errors and operation["security"], name
        for status, response in errors.items():
            assert response["content"]["application/json"]["schema"] == ERROR_BODY, name
            assert response["description"], (name, status)
        if "requestBody" in operation or name.startswith(("POST", "PUT")):
            assert {"413", "415", "422"} <= set(errors), name
    assert _operations(doc)["POST /v1/tasks/{task_id}/complete"]["responses"]["409"]
    assert "Retry-After" in _operations(doc)["POST /v1/tasks"]["responses"]["503"]["headers"]
    # A batch's entries are documented as single submissions, within the ceiling.
    tasks = doc["components"]["schemas"]["SubmitBatch"]["properties"]["tasks"]
    assert tasks["items"] == {"$ref": "#/components/schemas/SubmitTask"}
    assert (tasks["minItems"], tasks["maxItems"]) == (1, MAX_BATCH_SUBMIT_CEILING)
    assert "SubmitTask" in doc["components"]["schemas"]
    assert _operations(doc)["POST /v1/tasks/batch"]["security"] == [{"bearer": ["admin"]}]


def test_the_api_docs_load_no_external_url_and_need_no_token(http):
    for page in ("/docs", "/redoc"):
        html = http.get(page)
        assert html.status_code == 200
        assert not re.search(r"https?://", html.text), html.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            assert asset.startswith("/docs/assets/"), asset
            assert http.get(asset).status_code == 200, asset  # no token needed
    swagger = http.get("/docs").text
    assert "url: '/openapi.json'" in swagger
    # Only what is under the assets folder is public.
    assert http.get("/docs/assets/no-such-file.js").status_code == 404
    assert http.get("/docs/assetsx").status_code == 401


def test_a_body_not_sent_as_json_is_415_naming_the_header_and_appends_nothing(http):
    head = http.get("/healthz").json()["log_head"]
    for headers in (FORM, {"Content-Type": "text/plain"}, {}):
        answer = http.post(
            "/v1/tasks", content=b'{"description": "fix typo"}', headers={**ADMIN, **headers}
        )
        assert answer.status_code == 415, answer.text
        body = answer.json()
        assert body["error"] == "unsupported_media_type" and body["field"] == "content-type"
        assert "Content-Type: application/json" in body["message"]
    assert http.get("/healthz").json()["log_head"] == head


def test_json_bodies_and_bodiless_posts_pass(http):
    for content_type in ("application/json", "application/json; charset=utf-8"):
        answer = http.post(
            "/v1/tasks",
            content=b'{"description": "fix typo"}',
            headers={**ADMIN, "Content-Type": content_type},
        )
        assert answer.status_code == 201, answer.text
    task_id = answer.json()["task_id"]
    # A POST with no body needs no Content-Type (cancel without a reason).
    assert http.post(f"/v1/tasks/{task_id}/cancel", headers=ADMIN).status_code == 200


def test_the_token_is_checked_before_the_content_type(http):
    answer = http.post("/v1/tasks", content=b"description=x", headers=FORM)
    assert answer.status_code == 401


def test_a_body_that_is_not_utf8_is_a_422_on_the_body(http):
    answer = http.post(
        "/v1/tasks", content=b"\xff\xfe{", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "body"
