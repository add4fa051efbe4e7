"""Listing workflows (`GET /v1/workflows`) and a workflow's versions (`GET /v1/workflows/{name}/versions`), both
paged by cursor, and `GET /v1/me`, which names the key a request is made with."""

import pytest

from tests.app.conftest import register

pytestmark = pytest.mark.asyncio

NOOP = [{"name": "only", "task": "builtin.noop"}]


async def pages(api, path: str, field: str, limit: int) -> list[list]:
    """Every page of a listing, following its cursor to the end."""
    found, cursor = [], None
    while True:
        response = await api.get(path, params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        found.append(response.json()[field])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


async def test_workflows_are_listed_by_name_with_their_latest_version_and_count_of_versions(api):
    await register(api, "payments", NOOP)
    await register(api, "orders", NOOP)
    await register(api, "orders", [{"name": "only", "task": "builtin.echo"}])

    response = await api.get("/v1/workflows")

    assert response.status_code == 200
    assert response.json() == {
        "workflows": [
            {"name": "orders", "latest_version": 2, "versions": 2},
            {"name": "payments", "latest_version": 1, "versions": 1},
        ],
        "next_cursor": None,
    }


async def test_the_cursor_pages_through_every_workflow_once_in_order(api):
    names = [f"flow-{index:02}" for index in range(7)]
    for name in reversed(names):
        await register(api, name, NOOP)

    found = await pages(api, "/v1/workflows", "workflows", limit=3)

    assert [len(page) for page in found] == [3, 3, 1]
    assert [workflow["name"] for page in found for workflow in page] == names


async def test_a_workflows_versions_are_listed_newest_first_with_their_definitions_and_paged(api):
    for task in ("builtin.noop", "builtin.echo", "builtin.sleep"):
        await register(api, "orders", [{"name": "only", "task": task}])
    await register(api, "other", NOOP)

    found = await pages(api, "/v1/workflows/orders/versions", "versions", limit=2)

    versions = [version for page in found for version in page]
    assert [version["version"] for version in versions] == [3, 2, 1]
    assert [version["steps"][0]["task"] for version in versions] == ["builtin.sleep", "builtin.echo", "builtin.noop"]
    assert {version["name"] for version in versions} == {"orders"}


async def test_the_versions_of_an_unknown_workflow_are_a_404(api):
    response = await api.get("/v1/workflows/ghost/versions")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/workflows", "/v1/workflows/orders/versions"])
@pytest.mark.parametrize("cursor", ["not base64!", "AAAA", "MA"])
async def test_a_cursor_this_api_did_not_return_is_a_400(api, path, cursor):
    await register(api, "orders", NOOP)

    response = await api.get(path, params={"cursor": cursor})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("path", ["/v1/workflows", "/v1/workflows/orders/versions", "/v1/me"])
async def test_listing_needs_an_api_key(api, path):
    await register(api, "orders", NOOP)

    response = await api.get(path, headers={"Authorization": ""})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_read_only_key_may_list_workflows_and_their_versions(api):
    await register(api, "orders", NOOP)
    reader = (await api.post("/v1/api-keys", json={"name": "dashboard", "role": "read"})).json()["key"]
    as_reader = {"Authorization": f"Bearer {reader}"}

    assert (await api.get("/v1/workflows", headers=as_reader)).json()["workflows"][0]["name"] == "orders"
    assert (await api.get("/v1/workflows/orders/versions", headers=as_reader)).status_code == 200


async def test_me_names_the_key_and_its_role_and_never_its_secret(api):
    created = (await api.post("/v1/api-keys", json={"name": "dashboard", "role": "read"})).json()

    response = await api.get("/v1/me", headers={"Authorization": f"Bearer {created['key']}"})

    assert response.status_code == 200
    assert response.json()["name"] == "dashboard" and response.json()["role"] == "read"
    assert created["key"] not in response.text
