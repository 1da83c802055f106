"""Schema helpers shared by sinks and transforms (pure functions on Spark types)."""

from __future__ import annotations

from pyspark.sql.types import ArrayType, DataType, MapType, StructField, StructType


def nullable(data_type: DataType) -> DataType:
    """Returns the same type with every field, element and value nullable."""
    if isinstance(data_type, StructType):
        return StructType(
            [StructField(f.name, nullable(f.dataType), True, f.metadata) for f in data_type.fields]
        )
    if isinstance(data_type, ArrayType):
        return ArrayType(nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(data_type.keyType, nullable(data_type.valueType), True)
    return data_type


def to_ddl(schema: DataType) -> str:
    """Renders a struct as a column list for CREATE TABLE, names quoted."""
    if not isinstance(schema, StructType):
        raise TypeError(f"expected a StructType, found {type(schema).__name__}")
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
