"""A fast, header-only GGUF reader.

`gguf.GGUFReader` parses every element of the tokenizer arrays into numpy views
(1.6 s for the 98 MB demo model); the model manager lists dozens of files, so this
reader walks the same header with `struct` on an `mmap`, skips big arrays by
length, and never touches tensor data. The format constants (value types, tensor
types, block sizes, file-type names) still come from the `gguf` package.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
SMALL_ARRAY = 64  # arrays up to this length are decoded; longer ones only measured
MAX_COUNT = 1 << 32  # sanity bound on tensor / kv / array counts in a damaged header
MAX_DIMS = 8
MAX_NESTING = 8  # arrays of arrays: none in real files; deeper is a damaged header, not a recursion

SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

_SCALAR_FORMATS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}


class GGUFFormatError(ValueError):
    """The file is not GGUF, or its header is damaged or cut short (one-line message)."""


@dataclass(frozen=True)
class GGUFArray:
    """A long metadata array (e.g. the vocabulary), kept as its type and length only."""

    item_type: str
    length: int


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str  # GGMLQuantizationType name, or "unknown-<id>" for a type newer than `gguf`
    offset: int  # relative to the data section
    n_bytes: int | None  # None when the type is unknown

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class GGUFHeader:
    """Everything before the tensor data: version, key/values, tensor table."""

    version: int
    fields: dict[str, Any]
    tensors: list[GGUFTensorInfo]
    data_offset: int
    file_size: int
    arrays: dict[str, GGUFArray] = field(default_factory=dict)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def data_end(self) -> int:
        """Where the last tensor's bytes end (what a complete file needs)."""
        ends = [t.offset + t.n_bytes for t in self.tensors if t.n_bytes is not None]
        return self.data_offset + max(ends, default=0)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


class _Cursor:
    """Bounds-checked little/big-endian reads from a memory map."""

    def __init__(self, buf: mmap.mmap | bytes, order: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.order = order

    def need(self, count: int) -> None:
        if count < 0 or self.pos + count > self.size:
            raise GGUFFormatError("truncated GGUF file: the header ends before its last entry")

    def unpack(self, fmt: str) -> Any:
        fmt = self.order + fmt
        size = struct.calcsize(fmt)
        self.need(size)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        self.need(length)
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return bytes(raw).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("Q")
        self.need(length)
        self.pos += length


def _value_type(raw: int) -> gguf.GGUFValueType:
    try:
        return gguf.GGUFValueType(raw)
    except ValueError:
        raise GGUFFormatError(f"damaged GGUF header: unknown value type {raw}") from None


def _read_value(cur: _Cursor, vtype: gguf.GGUFValueType, depth: int = 0) -> Any:
    if vtype == gguf.GGUFValueType.STRING:
        return cur.string()
    if vtype == gguf.GGUFValueType.ARRAY:
        return _read_array(cur, depth + 1)
    return cur.unpack(_SCALAR_FORMATS[vtype])


def _read_array(cur: _Cursor, depth: int = 1) -> list[Any] | GGUFArray:
    """Decode a short array; skip a long one by its length (strings one by one)."""
    if depth > MAX_NESTING:
        raise GGUFFormatError("damaged GGUF header: arrays nested too deeply")
    item_type = _value_type(cur.unpack("I"))
    length = cur.unpack("Q")
    if length > MAX_COUNT:
        raise GGUFFormatError("damaged GGUF header: impossible array length")
    if length <= SMALL_ARRAY:
        return [_read_value(cur, item_type, depth) for _ in range(length)]
    if item_type in _SCALAR_FORMATS:
        nbytes = struct.calcsize(_SCALAR_FORMATS[item_type]) * length
        cur.need(nbytes)
        cur.pos += nbytes
    elif item_type == gguf.GGUFValueType.STRING:
        for _ in range(length):
            cur.skip_string()
    else:  # nested arrays
        for _ in range(length):
            _read_array(cur, depth + 1)
    return GGUFArray(item_type.name, length)


def _tensor_info(cur: _Cursor) -> GGUFTensorInfo:
    name = cur.string()
    n_dims = cur.unpack("I")
    if n_dims > MAX_DIMS:
        raise GGUFFormatError(f"damaged GGUF header: tensor {name!r} has {n_dims} dimensions")
    shape = tuple(cur.unpack("Q") for _ in range(n_dims))
    raw_type = cur.unpack("I")
    offset = cur.unpack("Q")
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        return GGUFTensorInfo(name, shape, f"unknown-{raw_type}", offset, None)
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    return GGUFTensorInfo(name, shape, qtype.name, offset, n_elements * type_size // block)


def _byte_order(head: bytes) -> str:
    """GGUF is little-endian unless the version only makes sense byte-swapped."""
    version = struct.unpack_from("<I", head, 4)[0]
    return ">" if version & 0xFFFF == 0 else "<"


def _parse(buf: mmap.mmap | bytes, file_size: int) -> GGUFHeader:
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise GGUFFormatError("not a GGUF file (the file does not start with 'GGUF')")
    if file_size < 24:
        raise GGUFFormatError("truncated GGUF file: too short for a header")
    cur = _Cursor(buf, _byte_order(bytes(buf[:8])))
    cur.pos = 4
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"unsupported GGUF version {version} (this app reads versions 2 and 3)")
    tensor_count = cur.unpack("Q")
    kv_count = cur.unpack("Q")
    if tensor_count > MAX_COUNT or kv_count > MAX_COUNT:
        raise GGUFFormatError("damaged GGUF header: impossible tensor or key count")
    fields: dict[str, Any] = {}
    arrays: dict[str, GGUFArray] = {}
    for _ in range(kv_count):
        key = cur.string()
        value = _read_value(cur, _value_type(cur.unpack("I")))
        if isinstance(value, GGUFArray):
            arrays[key] = value
        else:
            fields[key] = value
    tensors = [_tensor_info(cur) for _ in range(tensor_count)]
    alignment = fields.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFFormatError("damaged GGUF header: general.alignment is not a power of two")
    data_offset = -(-cur.pos // alignment) * alignment
    return GGUFHeader(version, fields, tensors, data_offset, file_size, arrays)


def read_gguf_header(path: Path, check_complete: bool = True) -> GGUFHeader:
    """Parse the header of `path` through a read-only memory map (weights are never read).

    With `check_complete` a file shorter than its tensor table says (an
    interrupted download or copy) is rejected, as llama.cpp would reject it.
    """
    with open(path, "rb") as fh:
        file_size = fh.seek(0, 2)
        if file_size < 4:
            raise GGUFFormatError("not a GGUF file (the file is empty or too short)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            header = _parse(buf, file_size)
    if check_complete and header.data_end > file_size:
        raise GGUFFormatError(
            f"truncated GGUF file: {file_size} bytes on disk, its tensors need {header.data_end}"
        )
    return header


def has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def file_type_name(header: GGUFHeader) -> str | None:
    """'Q4_1' from general.file_type; else the tensor type that holds most bytes."""
    raw = header.get("general.file_type")
    if isinstance(raw, int):
        try:
            name = gguf.LlamaFileType(raw).name
        except ValueError:
            name = None
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return dominant_tensor_type(header)


def dominant_tensor_type(header: GGUFHeader) -> str | None:
    by_type: dict[str, int] = {}
    for t in header.tensors:
        if len(t.shape) >= 2:
            by_type[t.type_name] = by_type.get(t.type_name, 0) + t.n_elements
    return max(by_type, key=by_type.__getitem__) if by_type else None


def split_parts(path: Path) -> tuple[int, int] | None:
    """(part number, part count) for 'name-00001-of-00003.gguf', else None."""
    match = SPLIT_RE.match(path.name)
    if not match:
        return None
    return int(match["no"]), int(match["count"])


def split_siblings(path: Path) -> list[Path]:
    """All part files of a split model (those that exist), in order."""
    match = SPLIT_RE.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    names = [f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    return [path.with_name(n) for n in names if path.with_name(n).exists()]
