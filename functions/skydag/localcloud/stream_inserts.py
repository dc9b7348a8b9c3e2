"""One stream record for an item an UpdateItem creates, as DynamoDB writes it.

moto's ``update_item`` makes a missing item by putting its key first, then applies the
update: its stream gets two records, an ``INSERT`` of the bare key and then an ``INSERT``
of the whole item. DynamoDB streams one ``INSERT`` with the item as the update left it.
The bare key is no record of anything (a task instance image without a state), and a
stream processor would drop it as malformed; skydag's stores insert a task's item with
its first write (``TaskInstanceStore``), so the local cloud must stream it as AWS does.

``one_insert_per_created_item`` drops the bare key's record while the block runs. The
local cloud serializes DynamoDB requests (``concurrency.atomic_dynamodb``), so no other
write lands between the check for the item and the update.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import Item

_PATCHED = "_skydag_one_insert"


@contextmanager
def one_insert_per_created_item() -> Iterator[None]:
    """Patch moto's ``DynamoDBBackend.update_item`` while the block runs (once: a block
    inside another leaves the patch as it is)."""
    original = DynamoDBBackend.update_item
    if getattr(original, _PATCHED, False):
        yield
        return

    def update_item(
        self: DynamoDBBackend, table_name: str, key: Any, *args: Any, **kwargs: Any
    ) -> Any:
        table = self.get_table(table_name)
        shard = table.stream_shard
        if shard is None or table.get_item(*self.get_keys_value(table, key)) is not None:
            return original(self, table_name, key, *args, **kwargs)
        add = shard.add
        bare_key_put = [True]

        def add_once(old: Item | None, new: Item | None) -> None:
            if bare_key_put:  # the key put that makes the item: not a record on AWS
                bare_key_put.clear()
                return
            add(old, new)

        shard.add = add_once  # type: ignore[method-assign]
        try:
            return original(self, table_name, key, *args, **kwargs)
        finally:
            del shard.add  # the class's method again

    setattr(update_item, _PATCHED, True)
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoDBBackend.update_item = original  # type: ignore[method-assign]
