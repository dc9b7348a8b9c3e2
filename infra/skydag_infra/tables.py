"""DynamoDB table specs derived from the PynamoDB models, so infra never drifts from the code.

Everything a table needs comes from ``skydag.store.models``: the keys and their types,
every secondary index (keys and projection), the stream view type (``Meta.stream_view_type``)
and the TTL attribute. The schema is the one PynamoDB's own ``create_table`` sends (what the
embedded environment and the tests create), read through ``Model._get_schema()``.

Which ``TableNames`` field (and so which ``SKYDAG_*_TABLE`` variable) a model is bound to is
read from ``bind_models`` itself, by binding the models once to marker names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, cast

from pynamodb.attributes import TTLAttribute
from pynamodb.models import Model

from skydag.settings import Settings, TableNames
from skydag.store.models import ALL_MODELS, DueTasksIndex, TaskInstanceModel, bind_models


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    name: str
    type: str  # DynamoDB attribute type: "S", "N" or "B"


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None
    projection: str  # "ALL", "KEYS_ONLY" or "INCLUDE"
    non_key_attributes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table, as the models describe it."""

    field: str  # the ``TableNames`` field this model is bound to: "dags", "task_state", ...
    model: type[Model]
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None
    global_indexes: tuple[IndexSpec, ...]
    local_indexes: tuple[IndexSpec, ...]
    stream_view_type: str | None
    ttl_attribute: str | None

    @property
    def env_var(self) -> str:
        """``SKYDAG_DAGS_TABLE``, ...: the variable ``Settings.from_env`` reads."""
        return f"SKYDAG_{self.field.upper()}_TABLE"

    @property
    def output_name(self) -> str:
        """``DagsTable``, ``DagVersionsTable``, ...: the stack output the CLI reads."""
        return "".join(part.capitalize() for part in self.field.split("_")) + "Table"

    @property
    def construct_id(self) -> str:
        return self.output_name


def table_specs() -> tuple[TableSpec, ...]:
    """Every table of ``ALL_MODELS``, in the models' order."""
    fields = _table_fields_by_model()
    return tuple(_spec(model, fields[model]) for model in ALL_MODELS)


# The task-instances index that ``due_keys`` (keys only) replaced: the same keys, every
# attribute projected. CloudFormation creates or deletes at most one GSI per table update,
# so the replacement takes two deployments: the first keeps this one beside the new one.
RETIRED_DUE_INDEX = "due"


def with_retired_due_index(specs: tuple[TableSpec, ...]) -> tuple[TableSpec, ...]:
    """``specs`` with the retired ``due`` index beside the one that replaced it."""

    def keeping(spec: TableSpec) -> TableSpec:
        if spec.model is not TaskInstanceModel:
            return spec
        name = DueTasksIndex.Meta.index_name
        current = next(i for i in spec.global_indexes if i.name == name)
        retired = replace(current, name=RETIRED_DUE_INDEX, projection="ALL")
        return replace(spec, global_indexes=(*spec.global_indexes, retired))

    return tuple(keeping(spec) for spec in specs)


def _spec(model: type[Model], field: str) -> TableSpec:
    # The exact schema PynamoDB's create_table sends: the one source of truth.
    schema = cast(dict[str, Any], model._get_schema())
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["attribute_definitions"]}
    partition_key, sort_key = _keys(schema["key_schema"], types)
    # PynamoDB enables TTL on create_table for the (single) TTLAttribute: so does infra.
    ttl = next((a for a in model.get_attributes().values() if isinstance(a, TTLAttribute)), None)
    return TableSpec(
        field=field,
        model=model,
        partition_key=partition_key,
        sort_key=sort_key,
        global_indexes=tuple(_index(i, types) for i in schema.get("global_secondary_indexes", [])),
        local_indexes=tuple(_index(i, types) for i in schema.get("local_secondary_indexes", [])),
        stream_view_type=getattr(model.Meta, "stream_view_type", None),
        ttl_attribute=ttl.attr_name if ttl is not None else None,
    )


def _keys(
    key_schema: list[dict[str, str]], types: dict[str, str]
) -> tuple[KeyAttribute, KeyAttribute | None]:
    by_type = {k["KeyType"]: k["AttributeName"] for k in key_schema}
    hash_name = by_type["HASH"]
    range_name = by_type.get("RANGE")
    return (
        KeyAttribute(hash_name, types[hash_name]),
        KeyAttribute(range_name, types[range_name]) if range_name else None,
    )


def _index(index: dict[str, Any], types: dict[str, str]) -> IndexSpec:
    # An index's own attribute definitions are folded into the table's by PynamoDB.
    types = types | {d["AttributeName"]: d["AttributeType"] for d in index["attribute_definitions"]}
    partition_key, sort_key = _keys(index["key_schema"], types)
    projection = index["projection"]
    return IndexSpec(
        name=index["index_name"],
        partition_key=partition_key,
        sort_key=sort_key,
        projection=projection["ProjectionType"],
        non_key_attributes=tuple(projection.get("NonKeyAttributes", ())),
    )


_MARKER = "skydag-infra-field:"


def _table_fields_by_model() -> dict[type[Model], str]:
    """Model -> ``TableNames`` field, read from ``bind_models`` (the code's own mapping)."""
    markers = TableNames(**{name: _MARKER + name for name in TableNames.model_fields})
    with _models_restored():
        bind_models(Settings(tables=markers))
        fields = {model: str(model.Meta.table_name) for model in ALL_MODELS}
    unbound = [m.__name__ for m, name in fields.items() if not name.startswith(_MARKER)]
    if unbound:
        raise RuntimeError(f"bind_models does not bind {unbound} to a TableNames field")
    return {model: name.removeprefix(_MARKER) for model, name in fields.items()}


@contextmanager
def _models_restored() -> Iterator[None]:
    """Binding is global state: put every model back as it was (a test may hold them).

    Every PynamoDB model is saved, not only ``ALL_MODELS``: ``bind_models`` also binds
    models that share a table (records of another kind in the dags table)."""
    saved = [
        (model, dict(vars(model.Meta)), model.__dict__.get("_connection"))
        for model in _all_models(Model)
    ]
    try:
        yield
    finally:
        for model, meta, connection in saved:
            for name in ("table_name", "region", "host"):
                if name in meta:
                    setattr(model.Meta, name, meta[name])
                elif name in vars(model.Meta):
                    delattr(model.Meta, name)
            model._connection = connection


def _all_models(base: type[Model]) -> list[type[Model]]:
    found: list[type[Model]] = []
    for subclass in base.__subclasses__():
        found.append(subclass)
        found.extend(_all_models(subclass))
    return found
