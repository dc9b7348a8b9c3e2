"""Where each DAG version's validated spec lives: one immutable S3 object per version.

A DynamoDB item holds at most 400 KB and a 10,000-task DAG's spec is about 1 MB of JSON,
so the version item keeps only a pointer (``SpecPointer``: key, size, sha256) and the
spec is a gzip'd JSON object in the DAG bucket under ``Settings.versions_prefix``, a
prefix outside the DAG prefix whose keys end ``.json.gz`` (never a DAG file to load).

- The object is written BEFORE the version item that points at it: a loader that dies in
  between leaves an unreferenced object, never a pointer to nothing.
- The key carries the version number and the spec's sha256: two loaders racing for one
  version number write two objects, so the one whose item wins never points at the
  other's bytes. Gzip without a timestamp makes the same spec the same bytes.
- Readers check size and sha256 before decompressing, and decompress at most
  ``MAX_SPEC_JSON_BYTES``.
- ``SpecCache`` keeps parsed versions: they never change, so nothing is invalidated;
  it is bounded by the JSON bytes it holds, not by a count (one big DAG is many small).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from skydag.settings import Settings

SPEC_OBJECT_SUFFIX: Final = ".json.gz"
MAX_SPEC_JSON_BYTES: Final = 64 * 1024 * 1024
"""The largest spec JSON a reader decompresses: far above what a 1 MiB DAG file makes."""
SPEC_CACHE_BYTES: Final = 128 * 1024 * 1024
"""Spec JSON bytes a process keeps parsed (a parsed spec takes a few times more memory)."""


class SpecObjectError(RuntimeError):
    """A version's spec object is missing, or its bytes are not what the pointer says."""


@dataclass(frozen=True, slots=True)
class SpecPointer:
    """What the version item keeps about its spec object."""

    key: str
    size: int  # bytes of the stored (compressed) object
    sha256: str  # of the stored object's bytes


def spec_object_key(prefix: str, dag_id: str, version: int, spec_sha256: str) -> str:
    """``<prefix><dag>/v<version>/<sha256 of the spec JSON>.json.gz``."""
    return f"{prefix}{dag_id}/v{version}/{spec_sha256}{SPEC_OBJECT_SUFFIX}"


def compress(spec_json: str) -> bytes:
    # mtime=0: the same JSON always gives the same bytes (and the same sha256).
    return gzip.compress(spec_json.encode(), compresslevel=6, mtime=0)


def decompress(data: bytes, where: str, limit: int = MAX_SPEC_JSON_BYTES) -> str:
    """The JSON text of a stored object, refusing one that expands past ``limit``."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    text = inflater.decompress(data, limit + 1)
    if len(text) > limit or inflater.unconsumed_tail:
        raise SpecObjectError(f"{where}: expands past {limit} bytes")
    return text.decode()


class SpecObjects:
    """Puts and gets spec objects in the DAG bucket (boto3 built on first use)."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.bucket = settings.dag_bucket
        self.prefix = settings.versions_prefix
        self._settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from skydag.adapters import aws_client

            self._client = aws_client("s3", self._settings)
        return self._client

    def ensure_bucket(self) -> None:
        """Create the DAG bucket when missing (dev and tests; the stack makes it on AWS)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        request: dict[str, Any] = {"Bucket": self.bucket}
        if self._settings.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self._settings.region}
        self.client.create_bucket(**request)

    def put(self, dag_id: str, version: int, spec_json: str) -> SpecPointer:
        body = compress(spec_json)
        key = spec_object_key(
            self.prefix, dag_id, version, hashlib.sha256(spec_json.encode()).hexdigest()
        )
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ContentEncoding="gzip",
        )
        return SpecPointer(key, len(body), hashlib.sha256(body).hexdigest())

    def get(self, pointer: SpecPointer) -> str:
        """The spec JSON the pointer names, checked against its size and sha256."""
        from botocore.exceptions import ClientError

        where = f"s3://{self.bucket}/{pointer.key}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=pointer.key)
        except ClientError as error:
            raise SpecObjectError(f"{where}: cannot be read ({error})") from error
        body = response["Body"]
        try:
            data: bytes = body.read(pointer.size + 1)
        finally:
            body.close()
        if len(data) != pointer.size or hashlib.sha256(data).hexdigest() != pointer.sha256:
            raise SpecObjectError(f"{where}: not the bytes the version item points at")
        return decompress(data, where)


class _Binding:
    """The bucket the models are bound to, as PynamoDB models hold their table."""

    objects: SpecObjects | None = None


def bind_spec_objects(settings: Settings) -> None:
    """Point the spec objects at ``settings``' DAG bucket (called by ``bind_models``)."""
    _Binding.objects = SpecObjects(settings)


def spec_objects() -> SpecObjects:
    if _Binding.objects is None:
        raise RuntimeError("spec objects are not bound: call skydag.store.models.bind_models")
    return _Binding.objects


K = TypeVar("K")
V = TypeVar("V")


class SpecCache(Generic[K, V]):
    """Least recently used values, bounded by the total of their sizes (given on put)."""

    def __init__(self, max_bytes: int = SPEC_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.max_bytes:
            return  # larger than the whole cache: read again when next needed
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def get_or_load(self, key: K, load: Callable[[], tuple[V, int]]) -> V:
        found = self.get(key)
        if found is not None:
            return found
        value, size = load()
        self.put(key, value, size)
        return value
