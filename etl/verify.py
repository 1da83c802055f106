"""Proof that erased values are gone: every file under a table's location, read directly.

Not through the table format's reader (which hides deleted rows, deletion vectors, older
snapshots): each file is opened as what it is.

- Parquet (data files, Delta checkpoints, Hudi base files): every column at any depth; a
  value is found when a text or bytes cell equals it, or (values of ``MIN_SUBSTRING`` bytes or
  more) contains it: Delta's checkpoint ``stats`` JSON, raw Avro in a dead letter. Numbers are
  compared only in the subject's own columns (an id 42 is no hit in a ``quantity`` of 42).
- Avro container files (Iceberg manifests and manifest lists): every record value, also
  column bounds, which Iceberg truncates to 16 characters (a bound that is the first 16
  characters of a value counts; numeric bounds are binary and not compared).
- Anything else (Delta's JSON log, Hudi log files, metadata, HFiles): its bytes, and the
  inflated bytes of every compressed HFile block.

Nothing here logs or returns a value: a hit names the file only.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import ahocorasick
import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

log = logging.getLogger(__name__)

# shorter values are only found as whole cells: as substrings they would match anywhere
MIN_SUBSTRING = 6
# Iceberg's default truncation of string column bounds (write.metadata.metrics.default)
_BOUND_CHARACTERS = 16
_HFILE_BLOCK = b"DATABLK*"
# HFile v3 block header: magic, two sizes, previous offset, checksum type, bytes per
# checksum, on-disk data size
_HFILE_HEADER = 33


@dataclass(frozen=True)
class ScanResult:
    """What a scan read and where it found a value (file names only)."""

    files: int = 0
    bytes: int = 0
    hits: tuple[str, ...] = ()
    # files that could not be parsed as their kind (searched as bytes instead)
    unparsed: tuple[str, ...] = field(default_factory=tuple)

    def __add__(self, other: ScanResult) -> ScanResult:
        return ScanResult(
            self.files + other.files,
            self.bytes + other.bytes,
            self.hits + other.hits,
            self.unparsed + other.unparsed,
        )


class _Needles:
    """The values to find: exact (as text) and as substrings, in one pass per buffer."""

    def __init__(self, values: Iterable[str], fields: Iterable[str] = ()) -> None:
        self.fields = frozenset(fields)
        encoded = {v.encode() for v in values if v}
        self.exact_bytes = frozenset(encoded)
        self.exact = pa.array(sorted(encoded), pa.binary())
        self.exact_text = pa.array(sorted(v.decode() for v in encoded), pa.string())
        self._automaton: Any = None
        long = [v for v in encoded if len(v) >= MIN_SUBSTRING]
        if long:
            automaton = ahocorasick.Automaton()
            for value in long:
                # latin-1 maps each byte to one character: byte strings searched as text
                automaton.add_word(value.decode("latin-1"), len(value))
            automaton.make_automaton()
            self._automaton = automaton
        self.prefixes = {
            v.decode()[:_BOUND_CHARACTERS].encode()
            for v in encoded
            if len(v.decode()) > _BOUND_CHARACTERS
        }

    def in_bytes(self, data: bytes) -> bool:
        """Whether a long value occurs in the bytes."""
        if self._automaton is None or not data:
            return False
        for _ in self._automaton.iter(data.decode("latin-1")):
            return True
        return False

    def in_cell(self, value: bytes) -> bool:
        """Whether one value equals, contains, or is a bound prefix of a value."""
        return value in self.exact_bytes or value in self.prefixes or self.in_bytes(value)


def scan_location(
    location: str,
    values: Sequence[str],
    *,
    fields: Sequence[str] = (),
    filesystem: fs.FileSystem | None = None,
) -> ScanResult:
    """Reads every file under a location and reports those holding any of the values.

    Args:
        location: A table's root (local path, ``file:`` or ``s3://`` URI).
        values: The values that must not occur (compared as UTF-8 text).
        fields: The subject's columns: numeric cells are compared in these only.
        filesystem: The file system (default: from the URI; S3 with the default credentials).

    Returns:
        Files and bytes read, the files with a hit, the files not parseable as their kind.
    """
    needles = _Needles(values, fields)
    files, root = _filesystem(location, filesystem)
    result = ScanResult()
    for info in files.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != fs.FileType.File:
            continue
        found, parsed = _scan_file(files, info.path, needles)
        result = result + ScanResult(
            1,
            int(info.size or 0),
            (info.path,) if found else (),
            () if parsed else (info.path,),
        )
    return result


def _filesystem(location: str, given: fs.FileSystem | None) -> tuple[fs.FileSystem, str]:
    """The file system of a location and the path within it."""
    parsed = urlparse(location)
    if given is not None:
        path = parsed.path if parsed.scheme in ("file", "") else f"{parsed.netloc}{parsed.path}"
        return given, path
    if parsed.scheme in ("", "file"):
        return fs.LocalFileSystem(), parsed.path
    files, path = fs.FileSystem.from_uri(location.replace("s3a://", "s3://", 1))
    return files, path


def _scan_file(files: fs.FileSystem, path: str, needles: _Needles) -> tuple[bool, bool]:
    """(whether the file holds a value, whether it parsed as its kind)."""
    with files.open_input_file(path) as stream:
        data = stream.read()
    name = path.rsplit("/", 1)[-1]
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        try:
            return _in_parquet(data, needles), True
        except (pa.ArrowException, OSError) as err:
            log.debug("%s: not readable as parquet (%s)", path, type(err).__name__)
            return needles.in_bytes(data), False
    if name.endswith(".avro") and data[:4] == b"Obj\x01":
        try:
            return _in_avro(data, needles), True
        except (ValueError, EOFError, OSError) as err:
            log.debug("%s: not readable as avro (%s)", path, type(err).__name__)
            return needles.in_bytes(data), False
    if needles.in_bytes(data):
        return True, True
    return any(needles.in_bytes(block) for block in _inflated_blocks(data)), True


def _in_parquet(data: bytes, needles: _Needles) -> bool:
    """Whether any cell of any column holds a value (row group by row group)."""
    reader = pq.ParquetFile(pa.BufferReader(data))
    for group in range(reader.num_row_groups):
        table = reader.read_row_group(group)
        for name, column in zip(table.column_names, table.columns, strict=True):
            numbers = name in needles.fields
            for chunk in column.chunks:
                if any(_in_leaf(leaf, needles, numbers=numbers) for leaf in _leaves(chunk)):
                    return True
    return False


def _leaves(array: pa.Array) -> Iterator[pa.Array]:
    """The primitive arrays inside an array of any nesting."""
    kind = array.type
    if isinstance(array, pa.DictionaryArray):
        yield array.dictionary
    elif pa.types.is_struct(kind):
        for number in range(kind.num_fields):
            yield from _leaves(array.field(number))
    elif pa.types.is_map(kind):
        yield from _leaves(array.keys)
        yield from _leaves(array.items)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        yield from _leaves(array.flatten())
    else:
        yield array


def _in_leaf(leaf: pa.Array, needles: _Needles, *, numbers: bool) -> bool:
    """Whether a primitive array holds a value: equal cells, or long values inside text;
    numeric cells only with ``numbers`` (a subject's column)."""
    kind = leaf.type
    if len(leaf) == 0 or pa.types.is_null(kind):
        return False
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if pc.any(pc.is_in(leaf, value_set=needles.exact_text)).as_py():
            return True
        return needles.in_bytes(_value_bytes(leaf))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        if pc.any(pc.is_in(leaf.cast(pa.binary()), value_set=needles.exact)).as_py():
            return True
        return needles.in_bytes(_value_bytes(leaf))
    if numbers and (pa.types.is_integer(kind) or pa.types.is_decimal(kind)):
        return bool(pc.any(pc.is_in(leaf.cast(pa.string()), value_set=needles.exact_text)).as_py())
    return False


def _value_bytes(leaf: pa.Array) -> bytes:
    """The bytes of a text or binary array's values, back to back (its data buffer)."""
    data = leaf.buffers()[2]
    return b"" if data is None else data.to_pybytes()


def _in_avro(data: bytes, needles: _Needles) -> bool:
    """Whether any value of any record of an Avro container file holds a value."""
    reader = fastavro.reader(pa.BufferReader(data))
    return any(_in_datum(record, needles) for record in reader)


def _in_datum(datum: Any, needles: _Needles) -> bool:
    """Walks one decoded Avro value."""
    if isinstance(datum, dict):
        return any(_in_datum(v, needles) for v in datum.values())
    if isinstance(datum, list):
        return any(_in_datum(v, needles) for v in datum)
    if isinstance(datum, tuple):  # Iceberg's bounds: (field id, bytes) pairs
        return any(_in_datum(v, needles) for v in datum)
    if isinstance(datum, bytes | bytearray):
        return needles.in_cell(bytes(datum))
    if isinstance(datum, str):
        return needles.in_cell(datum.encode())
    return False


def _inflated_blocks(data: bytes) -> Iterator[bytes]:
    """The inflated bodies of compressed HFile blocks (gzip or zlib), where it has any."""
    start = data.find(_HFILE_BLOCK)
    while start != -1:
        body = data[start + _HFILE_HEADER :]
        for wbits in (zlib.MAX_WBITS | 16, zlib.MAX_WBITS):
            try:
                yield zlib.decompressobj(wbits).decompress(body)
                break
            except zlib.error:
                continue
        start = data.find(_HFILE_BLOCK, start + 1)
