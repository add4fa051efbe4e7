"""The OpenAPI document is the one before issue 9's refactoring, apart from additions: every path, method,
parameter, request body, response, status and schema of the committed baseline is still there, unchanged. Built
with no service reachable."""

from __future__ import annotations

import copy
import socket

import pytest

from tests.unit.openapi_document import baseline_document, current_document, missing_or_changed


@pytest.fixture(scope="module")
def document():
    """The current document, built while every network connection is refused."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("building the OpenAPI document tried to connect to something")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield current_document()


@pytest.fixture
def baseline():
    return baseline_document()


def test_the_document_holds_everything_the_baseline_holds_unchanged(document, baseline):
    assert missing_or_changed(baseline, document) == []


def test_the_baseline_covers_every_endpoint_of_the_api(baseline):
    operations = {(method, path) for path, item in baseline["paths"].items() for method in item}
    assert len(operations) == 18
    assert ("post", "/v1/runs:batch") in operations and ("delete", "/v1/api-keys/{key_id}") in operations


def test_a_removed_path_is_reported(baseline):
    current = copy.deepcopy(baseline)
    del current["paths"]["/v1/runs:batch"]
    assert missing_or_changed(baseline, current) == ["path /v1/runs:batch is gone"]


def test_a_removed_method_is_reported(baseline):
    current = copy.deepcopy(baseline)
    del current["paths"]["/v1/api-keys"]["get"]
    assert missing_or_changed(baseline, current) == ["GET /v1/api-keys is gone"]


def test_a_changed_parameter_is_reported(baseline):
    current = copy.deepcopy(baseline)
    limit = next(p for p in current["paths"]["/v1/runs"]["get"]["parameters"] if p["name"] == "limit")
    limit["schema"]["maximum"] = 100
    assert missing_or_changed(baseline, current) == ["GET /v1/runs: query parameter limit changed"]


def test_a_removed_parameter_is_reported(baseline):
    current = copy.deepcopy(baseline)
    operation = current["paths"]["/v1/workflows/{name}/runs"]["post"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "idempotency-key"]
    assert missing_or_changed(baseline, current) == [
        "POST /v1/workflows/{name}/runs: header parameter idempotency-key is gone"
    ]


def test_a_new_required_parameter_is_reported(baseline):
    current = copy.deepcopy(baseline)
    current["paths"]["/v1/runs"]["get"]["parameters"].append(
        {"in": "query", "name": "tenant", "required": True, "schema": {"type": "string"}}
    )
    assert missing_or_changed(baseline, current) == [
        "GET /v1/runs: new query parameter tenant is required: requests that worked would fail"
    ]


def test_a_removed_response_status_is_reported(baseline):
    current = copy.deepcopy(baseline)
    del current["paths"]["/v1/runs/{run_id}/cancel"]["post"]["responses"]["409"]
    assert missing_or_changed(baseline, current) == ["POST /v1/runs/{run_id}/cancel: response 409 is gone"]


def test_a_changed_response_is_reported(baseline):
    current = copy.deepcopy(baseline)
    current["paths"]["/v1/runs/{run_id}"]["get"]["responses"]["404"]["description"] = "Gone."
    assert missing_or_changed(baseline, current) == ["GET /v1/runs/{run_id}: response 404 changed"]


def test_a_changed_request_body_or_operation_id_is_reported(baseline):
    current = copy.deepcopy(baseline)
    operation = current["paths"]["/v1/workflows"]["post"]
    operation["requestBody"]["required"] = False
    operation["operationId"] = "register"
    assert sorted(missing_or_changed(baseline, current)) == [
        "POST /v1/workflows: operationId changed",
        "POST /v1/workflows: requestBody changed",
    ]


def test_a_removed_or_changed_schema_is_reported(baseline):
    current = copy.deepcopy(baseline)
    del current["components"]["schemas"]["RunPage"]
    current["components"]["schemas"]["ErrorBody"]["required"].remove("message")
    assert sorted(missing_or_changed(baseline, current)) == ["schema ErrorBody changed", "schema RunPage is gone"]


def test_additions_are_accepted(baseline):
    current = copy.deepcopy(baseline)
    current["paths"]["/v1/workers"] = {"get": {"responses": {"200": {"description": "Workers."}}}}
    current["paths"]["/v1/runs/{run_id}"]["delete"] = {"responses": {"204": {"description": "Deleted."}}}
    current["paths"]["/v1/runs"]["get"]["parameters"].append(
        {"in": "query", "name": "since", "required": False, "schema": {"type": "string"}}
    )
    current["paths"]["/v1/runs"]["get"]["responses"]["504"] = {"description": "Too slow."}
    current["components"]["schemas"]["WorkerOut"] = {"type": "object"}
    assert missing_or_changed(baseline, current) == []
