"""Fuzzing the readers of model files: GGUF headers, safetensors headers, config/tokenizer JSON (issue 13).

`models inspect`, the model list and every job's pre-flight check read these files
from wherever the user points; whatever the bytes, the readers must answer with
their own one-line error (GGUFFormatError, HFMetaError, ModelInspectError) and
never hang. Seeds are fixed (`derandomize`) and no example database is written.
"""

from __future__ import annotations

import json
import struct
from datetime import timedelta
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medalpaca_desktop.core import gguf_meta, hf_meta
from medalpaca_desktop.core.model_info import ModelInfo, ModelInspectError
from medalpaca_desktop.core.models import inspect_model

FUZZ = settings(max_examples=80, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
HUGE = [0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, 1 << 63, (1 << 64) - 1]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=10,
)


def build_gguf(path: Path) -> bytes:
    """A small but complete GGUF written by the gguf package: scalars, a long vocabulary, two tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("fuzz")
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_list([f"t{i}" for i in range(80)])  # longer than SMALL_ARRAY: measured, not decoded
    writer.add_token_scores([0.0] * 8)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-models")


@pytest.fixture(scope="module")
def valid_gguf(work) -> bytes:
    data = build_gguf(work / "valid.gguf")
    header = gguf_meta.read_gguf_header(work / "valid.gguf")
    assert header.get("general.name") == "fuzz" and len(header.tensors) == 2  # the seed file is valid
    return data


def _inspect(path: Path) -> ModelInfo | None:
    """inspect_model's answer: metadata, or None after a one-line ModelInspectError."""
    try:
        return inspect_model(path)
    except ModelInspectError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return None


def _read_header(path: Path) -> gguf_meta.GGUFHeader | None:
    try:
        return gguf_meta.read_gguf_header(path)
    except gguf_meta.GGUFFormatError as exc:
        assert "\n" not in str(exc)
        return None


# ------------------------------------------------------------------ GGUF


@FUZZ
@given(data=st.binary(max_size=256), magic=st.booleans())
def test_random_bytes_as_gguf(work, data, magic):
    path = work / "random.gguf"
    path.write_bytes((b"GGUF" if magic else b"") + data)
    _read_header(path)
    _inspect(path)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=1 << 20))
def test_gguf_truncated_anywhere(work, valid_gguf, cut):
    path = work / "cut.gguf"
    path.write_bytes(valid_gguf[: cut % len(valid_gguf)])
    assert _read_header(path) is None  # every cut loses tensor data at least
    assert _inspect(path) is None


@settings(FUZZ, max_examples=200)
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.sampled_from(HUGE), st.sampled_from("BHIQ")),
                      min_size=1, max_size=4))
def test_gguf_header_fields_set_huge(work, valid_gguf, edits):
    """Counts, lengths, value types and dims overwritten in place (any offset in the header)."""
    data = bytearray(valid_gguf)
    header_end = gguf_meta.read_gguf_header(work / "valid.gguf").data_offset
    for offset, value, fmt in edits:
        size = struct.calcsize(fmt)
        offset %= header_end - size
        struct.pack_into("<" + fmt, data, offset, value & ((1 << (8 * size)) - 1))
    path = work / "mutated.gguf"
    path.write_bytes(bytes(data))
    header = _read_header(path)
    if header is not None:
        assert header.data_end <= len(data)
    _inspect(path)


@FUZZ
@given(start=st.integers(0, 1 << 16), junk=st.binary(min_size=1, max_size=32))
def test_gguf_header_bytes_garbled(work, valid_gguf, start, junk):
    data = bytearray(valid_gguf)
    start %= len(data)
    data[start : start + len(junk)] = junk
    path = work / "garbled.gguf"
    path.write_bytes(bytes(data))
    _read_header(path)
    _inspect(path)


def _gguf_prefix(kv_count: int, tensor_count: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count)


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def test_gguf_arrays_nested_thousands_deep_are_a_damaged_header(work):
    """Regression: array-of-array recursion hit Python's recursion limit (RecursionError)."""
    array, depth = gguf.GGUFValueType.ARRAY, 5000
    body = _gguf_string("a") + struct.pack("<I", array)
    body += struct.pack("<IQ", array, 1) * depth + struct.pack("<IQ", gguf.GGUFValueType.UINT8, 0)
    path = work / "nested.gguf"
    path.write_bytes(_gguf_prefix(1) + body + b"\0" * 64)
    with pytest.raises(gguf_meta.GGUFFormatError, match="nested too deeply"):
        gguf_meta.read_gguf_header(path)
    assert _inspect(path) is None


@pytest.mark.parametrize("count", [1 << 31, (1 << 32) - 1])
def test_gguf_huge_declared_counts_end_at_the_file_end(work, count):
    """A string array claiming billions of items, each 8 bytes of length: stops where the file ends."""
    body = _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", gguf.GGUFValueType.ARRAY,
                                                                 gguf.GGUFValueType.STRING, count)
    path = work / "counts.gguf"
    path.write_bytes(_gguf_prefix(1) + body + b"\0" * 4096)
    with pytest.raises(gguf_meta.GGUFFormatError, match="truncated"):
        gguf_meta.read_gguf_header(path)


# ------------------------------------------------------------------ safetensors and JSON files


def _model_folder(work: Path, name: str) -> Path:
    folder = work / name
    folder.mkdir(exist_ok=True)
    for child in folder.iterdir():
        child.unlink()
    return folder


def _safetensors(header: bytes, declared: int | None = None, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header) if declared is None else declared) + header + data


TENSOR_ENTRY = st.fixed_dictionaries(
    {"dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "Q4", ""]) | JSON,
     "shape": st.lists(st.integers(-5, 1 << 40), max_size=4) | JSON,
     "data_offsets": st.lists(st.integers(-(1 << 40), 1 << 64), max_size=3) | JSON},
)


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=12), TENSOR_ENTRY | JSON, max_size=4),
       declared=st.none() | st.sampled_from(HUGE) | st.integers(0, 400),
       data=st.binary(max_size=32))
def test_safetensors_header_lies(work, entries, declared, data):
    """Headers whose JSON lies about shapes, dtypes and offsets, or whose length field lies."""
    folder = _model_folder(work, "st")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    path = folder / "model.safetensors"
    path.write_bytes(_safetensors(json.dumps(entries).encode(), declared, data))
    try:
        header = hf_meta.read_safetensors_header(path)
    except hf_meta.HFMetaError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
    else:
        assert isinstance(header, dict)
    _inspect(folder)


@FUZZ
@given(raw=st.binary(max_size=300))
@example(raw=b"[" * 100_000)  # regression: RecursionError out of json.loads
@example(raw=b'{"w": {"shape": [' + b"9" * 5000 + b"]}}")  # regression: ValueError (int digits limit)
def test_safetensors_header_random_bytes(work, raw):
    folder = _model_folder(work, "st-raw")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(_safetensors(raw))
    try:
        hf_meta.read_safetensors_header(folder / "model.safetensors")
    except hf_meta.HFMetaError:
        pass
    _inspect(folder)


JSON_FILES = ["config.json", "tokenizer_config.json", "chat_template.json", "model.safetensors.index.json",
              "adapter_config.json", "generation_config.json", "tokenizer.json"]


@settings(FUZZ, max_examples=120)
@given(files=st.dictionaries(st.sampled_from(JSON_FILES),
                             JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64)
                             | st.sampled_from([b"[" * 50_000, b"1" * 5000, b"\xff\xfe", b""]),
                             min_size=1, max_size=4),
       base=st.sampled_from([{}, {"model_type": "llama"}, {"architectures": ["LlamaForCausalLM"]}]),
       jinja=st.none() | st.binary(max_size=40))
@example(files={"config.json": b"[" * 100_000}, base={}, jinja=None)  # regression: RecursionError
def test_config_and_tokenizer_files(work, files, base, jinja):
    """A model folder whose JSON files hold anything: wrong types, garbage, deep nesting, non-UTF-8."""
    folder = _model_folder(work, "hf")
    if "config.json" not in files:
        (folder / "config.json").write_text(json.dumps(base))
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    if jinja is not None:
        (folder / "chat_template.jinja").write_bytes(jinja)
    for name in files:
        try:
            assert isinstance(hf_meta.read_json(folder / name), dict)
        except hf_meta.HFMetaError as exc:
            assert "\n" not in str(exc) and name in str(exc)
    info = _inspect(folder)
    if info is not None:
        assert info.kind in ("hf", "adapter")
        assert info.chat_template is None or isinstance(info.chat_template, str)


@FUZZ
@given(config=st.dictionaries(st.sampled_from(["model_type", "architectures", "torch_dtype", "dtype",
                                               "max_position_embeddings", "text_config", "quantization_config",
                                               "num_hidden_layers", "hidden_size", "vocab_size"]), JSON,
                              max_size=6),
       index=st.fixed_dictionaries({}, optional={"metadata": JSON.filter(bool) | st.fixed_dictionaries(
           {}, optional={"total_parameters": JSON, "total_size": JSON}), "weight_map": JSON}) | JSON)
@example(config={}, index={"metadata": 1.0})  # found by hypothesis: AttributeError ('float' has no .get)
def test_config_values_of_every_type(work, config, index):
    """A valid config.json shape with each known key holding any JSON value; an index of any shape."""
    folder = _model_folder(work, "hf-values")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 16)  # a pickle: never opened, only measured
    info = _inspect(folder)
    if info is not None:
        assert info.pickle_weights
