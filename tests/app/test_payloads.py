"""Offloading large step payloads to an S3 bucket, against moto's in-memory S3."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from app.adapters.payloads import PayloadStore, PayloadTooLargeError

pytestmark = pytest.mark.asyncio

BUCKET = "payloads"
REGION = "us-east-1"
INLINE_LIMIT_BYTES = 64
LARGE_VALUE = {"rows": [{"id": n, "name": f"row {n}"} for n in range(50)]}


@pytest.fixture
def s3(monkeypatch) -> Iterator[object]:
    # Fake credentials, and no endpoint override, so nothing from the developer's shell can reach a real bucket.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def store(s3) -> PayloadStore:
    return PayloadStore(bucket=BUCKET, inline_limit_bytes=INLINE_LIMIT_BYTES, client=s3)


async def test_small_values_stay_inline(store, s3):
    value = {"ok": True}

    assert await store.offload(value, "runs/r1/step") == value
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


async def test_large_values_round_trip_through_the_bucket(store, s3):
    reference = await store.offload(LARGE_VALUE, "runs/r1/step")

    assert store.is_reference(reference)
    assert reference["$payload"].startswith(f"s3://{BUCKET}/runs/r1/step/")
    key = reference["$payload"].removeprefix(f"s3://{BUCKET}/")
    stored = s3.head_object(Bucket=BUCKET, Key=key)
    assert stored["ContentLength"] == reference["bytes"] > INLINE_LIMIT_BYTES
    assert await store.resolve(reference) == LARGE_VALUE


async def test_large_value_without_object_storage_is_refused_naming_size_and_limit():
    store = PayloadStore(bucket=BUCKET, inline_limit_bytes=INLINE_LIMIT_BYTES, client=None)

    with pytest.raises(PayloadTooLargeError, match=rf"\d+ bytes, over the inline limit of {INLINE_LIMIT_BYTES} bytes"):
        await store.offload(LARGE_VALUE, "runs/r1/step")


async def test_resolve_returns_a_non_reference_unchanged(store):
    value = {"$payload": "not a reference", "extra": 1}

    assert await store.resolve(value) == value


async def test_store_from_settings_uses_the_configured_bucket(s3):
    store = PayloadStore.from_settings(
        endpoint_url=None, bucket=BUCKET, region=REGION, inline_limit_bytes=INLINE_LIMIT_BYTES
    )

    reference = await store.offload(LARGE_VALUE, "runs/r2/step")

    assert await store.resolve(reference) == LARGE_VALUE
