"""Offload of large step inputs and outputs to S3-compatible object storage.

Rows, queue messages and cache entries stay small when big values live in a bucket: a value whose JSON encoding is
over the inline limit is uploaded and replaced by a reference `{"$payload": "s3://bucket/key", "bytes": n}`, which
`resolve` turns back into the value. Without object storage configured, a value over the limit is refused rather
than silently stored inline.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import boto3
import orjson

from app.domain import PayloadError, storable_text

REFERENCE_KEY = "$payload"
S3_SCHEME = "s3://"


class UnstorableTextError(PayloadError):
    def __init__(self) -> None:
        super().__init__(
            "the value holds text with the NUL character (\\u0000) or a lone surrogate, which PostgreSQL cannot store"
        )


def contains_unstorable_text(value: Any) -> bool:
    """Whether any string in a JSON value, key or item, is one `storable_text` would change."""
    if isinstance(value, str):
        return storable_text(value) != value
    if isinstance(value, dict):
        return any(contains_unstorable_text(key) or contains_unstorable_text(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(contains_unstorable_text(item) for item in value)
    return False


def contains_nul(value: Any) -> bool:
    """Whether any string in a JSON value, key or item, holds U+0000 (PostgreSQL's JSONB and text reject it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(key) or contains_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(item) for item in value)
    return False


class PayloadTooLargeError(PayloadError):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"payload is {size_bytes} bytes, over the inline limit of {limit_bytes} bytes, "
            "and no object storage is configured to offload it to"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class PayloadStore:
    def __init__(self, bucket: str, inline_limit_bytes: int, client: Any | None) -> None:
        """`client` is a boto3 S3 client, or None when no object storage is configured."""
        self.bucket = bucket
        self.inline_limit_bytes = inline_limit_bytes
        self._client = client

    @classmethod
    def from_settings(cls, endpoint_url: str | None, bucket: str, region: str, inline_limit_bytes: int) -> PayloadStore:
        """Builds the S3 client; credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID etc.).

        An empty `endpoint_url` means AWS itself; anything else is an S3-compatible service such as MinIO.
        """
        client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)
        return cls(bucket=bucket, inline_limit_bytes=inline_limit_bytes, client=client)

    @staticmethod
    def is_reference(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and value.keys() == {REFERENCE_KEY, "bytes"}
            and isinstance(value[REFERENCE_KEY], str)
            and value[REFERENCE_KEY].startswith(S3_SCHEME)
        )

    async def offload(self, value: Any, key_hint: str) -> Any:
        """Returns `value` itself when small enough, otherwise uploads it and returns a reference to it.

        `key_hint` (e.g. "runs/<run id>/<step>") becomes the object's key prefix so related payloads sit together.
        """
        try:
            encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            if contains_unstorable_text(value):  # orjson refuses lone surrogates
                raise UnstorableTextError from None
            raise
        # The encoding escapes NUL as \u0000, so only a value whose encoding shows that sequence needs the walk.
        if b"\\u0000" in encoded and contains_unstorable_text(value):
            raise UnstorableTextError
        if len(encoded) <= self.inline_limit_bytes:
            return value
        if self._client is None:
            raise PayloadTooLargeError(len(encoded), self.inline_limit_bytes)
        # Content-addressed: the same value gets the same reference, so an Idempotency-Key sent again with the same
        # large input is recognised as the same request (and its object is written once).
        digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS))
        key = f"{key_hint.strip('/')}/{digest.hexdigest()}.json"
        # boto3 is blocking; a thread keeps the upload from stalling the event loop.
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=key, Body=encoded, ContentType="application/json"
        )
        return {REFERENCE_KEY: f"{S3_SCHEME}{self.bucket}/{key}", "bytes": len(encoded)}

    async def resolve(self, value: Any) -> Any:
        """Returns the value a reference points to; any other value is returned unchanged."""
        if not self.is_reference(value):
            return value
        if self._client is None:
            raise PayloadError(f"cannot resolve {value[REFERENCE_KEY]}: no object storage is configured")
        # The reference names its own bucket, so payloads written before a bucket change still resolve.
        bucket, _, key = value[REFERENCE_KEY].removeprefix(S3_SCHEME).partition("/")
        return orjson.loads(await asyncio.to_thread(self._download, bucket, key))

    def _download(self, bucket: str, key: str) -> bytes:
        return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
