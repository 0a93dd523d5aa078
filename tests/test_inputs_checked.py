"""Bad input is checked before heavy work: one sentence naming the file, a specific kind, no traceback.

The broken files are the ones people really end up with: a download cut short, a safetensors
header that lies about a tensor's size or its own length, a config.json that is not JSON, a
folder without its tokenizer, an empty / truncated / garbled GGUF, pickle weights, and LoRA
target modules the model does not have. Each is tried through core.model_check and through the
commands a person runs (train, export, bench, chat).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.tiny_models import write_pickle_hf_dir

from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.model_check import (
    ModelCheckError,
    check_adapter,
    check_model,
    check_target_modules,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_QUESTIONS = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _weights(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def truncated(src: Path, dst: Path) -> Path:
    folder = _copy(src, dst)
    raw = _weights(folder).read_bytes()
    _weights(folder).write_bytes(raw[: len(raw) * 2 // 3])
    return folder


def lying_offsets(src: Path, dst: Path) -> Path:
    """A header whose first tensor claims a gigabyte more than its shape holds."""
    folder = _copy(src, dst)
    raw = _weights(folder).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 10**9
    new = json.dumps(header).encode()
    _weights(folder).write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return folder


def lying_length(src: Path, dst: Path) -> Path:
    folder = _copy(src, dst)
    raw = _weights(folder).read_bytes()
    _weights(folder).write_bytes(struct.pack("<Q", 10**12) + raw[8:])
    return folder


def broken_config(src: Path, dst: Path) -> Path:
    folder = _copy(src, dst)
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    return folder


def no_tokenizer(src: Path, dst: Path) -> Path:
    folder = _copy(src, dst)
    for file in folder.iterdir():
        if file.name.startswith("tokenizer"):
            file.unlink()
    return folder


BROKEN_FOLDERS = {
    "truncated": (truncated, "corrupt", "is cut short"),
    "lying offsets": (lying_offsets, "corrupt", "needs"),
    "lying header length": (lying_length, "corrupt", "not a valid safetensors file"),
    "broken config.json": (broken_config, "corrupt", "config.json is not readable JSON"),
    "no tokenizer": (no_tokenizer, "no_tokenizer", "has no tokenizer"),
}


def broken_ggufs(tiny_gguf: Path, folder: Path) -> dict[str, Path]:
    raw = tiny_gguf.read_bytes()
    files = {"empty": b"", "header cut": raw[:200], "tensors cut": raw[: len(raw) * 9 // 10],
             "garbled counts": raw[:8] + b"\xff" * 16 + raw[24:]}
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in files.items():
        path = folder / f"{name.replace(' ', '-')}.gguf"
        path.write_bytes(data)
        out[name] = path
    return out


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_a_broken_model_folder_is_one_sentence_with_its_kind(case, tiny_llama_dir, tmp_path):
    make, kind, phrase = BROKEN_FOLDERS[case]
    folder = make(tiny_llama_dir, tmp_path / "model")
    with pytest.raises(ModelCheckError) as err:
        check_model(folder)
    assert err.value.kind == kind
    message = str(err.value)
    assert phrase in message and str(folder.name) in message and "\n" not in message
    assert "again" in message or "copy" in message  # says what to do
    assert check_model(tiny_llama_dir).kind == "hf"  # the intact original passes


def test_broken_ggufs_pickle_weights_and_adapters(tiny_gguf, tiny_lora_dir, tiny_llama_dir, tmp_path):
    for name, path in broken_ggufs(tiny_gguf, tmp_path / "ggufs").items():
        with pytest.raises(ModelCheckError) as err:
            check_model(path)
        assert err.value.kind == "corrupt", name
        assert path.name in str(err.value)
    assert check_model(tiny_gguf).kind == "gguf"
    pickled = write_pickle_hf_dir(tmp_path / "pickled")
    with pytest.raises(ModelCheckError) as err:
        check_model(pickled, need_tokenizer=False)
    assert err.value.kind == "pickle_refused" and "can run code" in str(err.value)
    with pytest.raises(ModelCheckError) as err:
        check_model(tiny_lora_dir)
    assert err.value.kind == "unsupported" and "adapter" in str(err.value)
    assert check_adapter(tiny_lora_dir)["peft_type"] == "LORA"
    cut = _copy(tiny_lora_dir, tmp_path / "lora-cut")
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(ModelCheckError, match="cut short"):
        check_adapter(cut)
    with pytest.raises(ModelCheckError) as err:
        check_adapter(tiny_llama_dir)
    assert err.value.kind == "bad_adapter"


def test_target_modules_are_checked_against_the_models_layers(tiny_llama_dir):
    check_target_modules(tiny_llama_dir, ["q_proj", "v_proj"])
    check_target_modules(tiny_llama_dir, ["self_attn.q_proj"])  # peft matches the name's last dotted parts
    check_target_modules(tiny_llama_dir, ["all-linear"])
    with pytest.raises(ModelCheckError) as err:
        check_target_modules(tiny_llama_dir, ["q_proj", "query_key_value"])
    assert err.value.kind == "bad_target_modules"
    message = str(err.value)
    assert "query_key_value is not a layer" in message and "q_proj" in message and "all-linear" in message
    with pytest.raises(ModelCheckError):
        check_target_modules(tiny_llama_dir, ["proj"])  # a part of a name is not a name


def test_the_default_targets_move_to_a_fused_projection(tiny_llama_dir, tmp_path):
    import model_factory

    from medalpaca_desktop.core.model_check import fitting_targets

    phi3 = model_factory.build_tiny_model(tmp_path / "phi3", "phi3")
    assert fitting_targets(phi3, ["q_proj", "v_proj"]) == ["qkv_proj"]
    assert fitting_targets(tiny_llama_dir, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert fitting_targets(phi3, ["o_proj"]) == ["o_proj"]  # a user's own choice that fits is kept
    assert fitting_targets(tiny_llama_dir, ["nope"]) == ["nope"]  # and one that does not is left to the check


# ------------------------------------------------------------------ through the commands


def _train_config(tmp_path: Path, base: Path, **kw) -> Path:
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"instruction": "What causes scurvy?", "input": "", "output": "Vitamin C "
                                   "deficiency."}) + "\n", encoding="utf-8")
    values = {"method": "lora", "base_model": str(base), "data": [str(records)], "output_dir": str(tmp_path / "run"),
              "max_steps": 1, "global_batch_size": 1, "micro_batch_size": 1, "max_length": 128,
              "lora_target_modules": ["q_proj", "v_proj"], **kw}
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(values), encoding="utf-8")  # JSON is YAML
    return path


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("case", ["truncated", "no tokenizer", "bad target", "garbled gguf", "two processes"])
def test_train_refuses_bad_input_before_loading_anything(case, tiny_llama_dir, tiny_gguf, tmp_path):
    extra: list[str] = []
    if case in ("truncated", "two processes"):  # the second: the accelerate launcher checks before it launches
        extra = ["--num-processes", "2", "--set", "global_batch_size=2"] if case == "two processes" else []
        config = _train_config(tmp_path, truncated(tiny_llama_dir, tmp_path / "m"))
        kind = "corrupt"
    elif case == "no tokenizer":
        config = _train_config(tmp_path, no_tokenizer(tiny_llama_dir, tmp_path / "m"))
        kind = "no_tokenizer"
    elif case == "bad target":
        config = _train_config(tmp_path, tiny_llama_dir, lora_target_modules=["q_proj", "c_attn"])
        kind = "bad_target_modules"
    else:
        config = _train_config(tmp_path, broken_ggufs(tiny_gguf, tmp_path / "g")["garbled counts"])
        kind = "corrupt"
    proc = _run(["train", str(config), *extra])
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr[-2000:]
    events = _events(proc.stdout)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["kind"] == kind and not errors[0].get("detail")
    assert "Error:" not in errors[0]["message"]  # no exception class in front of the sentence
    stages = {e.get("stage") for e in events if e["type"] == "progress"}
    assert not stages & {"data", "model", "dequantize"}  # nothing heavy started
    assert "Traceback" not in proc.stderr


def test_export_and_bench_and_chat_say_one_sentence(tiny_llama_dir, tmp_path):
    folder = lying_offsets(tiny_llama_dir, tmp_path / "m")
    proc = _run(["export", "--model", str(folder), "--out", str(tmp_path / "x.gguf")])
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "Traceback" not in proc.stderr and "medalpaca: error:" in proc.stderr and "is damaged" in proc.stderr
    assert not (tmp_path / "x.gguf").exists()
    jsonl = _run(["export", "--model", str(folder), "--out", str(tmp_path / "x.gguf"), "--jsonl"])
    assert [e["kind"] for e in _events(jsonl.stdout) if e["type"] == "error"] == ["corrupt"]

    proc = _run(["bench", "--model", str(folder), "--backend", "hf", "--data", str(SAMPLE_QUESTIONS), "--limit", "2",
                 "--out", str(tmp_path / "bench")])
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "Traceback" not in proc.stderr and "is damaged" in proc.stderr

    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "chat", "--model", str(folder)],
                          input="Hello\n", capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "is damaged" in proc.stderr


# ------------------------------------------------------------------ the unexpected error at a terminal


CRASHING_WORKER = textwrap.dedent("""
    from medalpaca_desktop.core.worker import TerminalWriter, run_worker

    def job(worker):
        raise RuntimeError("a bug in the job")

    raise SystemExit(run_worker(job, name="demo", writer=TerminalWriter("medalpaca")))
""")


def test_an_unexpected_error_at_a_terminal_goes_to_a_log_file_not_the_screen(app_home):
    import pty

    main, secondary = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", CRASHING_WORKER], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=secondary, timeout=120, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        os.close(secondary)
        screen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(main)
    text = screen.decode()
    assert proc.returncode == ExitCode.FAILED
    assert "Traceback" not in text and "a bug in the job" in text
    (log,) = (app_home / "data" / "logs").glob("demo-*.log")
    assert str(log) in text.replace("\r\n", "").replace("\n", "")
    assert "Traceback" in log.read_text() and (log.stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------------ offline, and no Hub-kernel noise


NOISY_IMPORT = textwrap.dedent("""
    import importlib.abc, sys

    class PretendAvx512Bf16(importlib.abc.MetaPathFinder):
        '''After bitsandbytes.functional runs, report a CPU with AVX-512 BF16 (the users' machines).'''
        def find_spec(self, name, path, target=None):
            if name != "bitsandbytes.functional":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module
            def patched(module):
                exec_module(module)
                module.has_avx512bf16 = lambda: True
            spec.loader.exec_module = patched
            return spec

    import importlib.util
    sys.meta_path.insert(0, PretendAvx512Bf16())
    if sys.argv[1] == "quiet":
        from medalpaca_desktop.core.offline import stay_offline
        stay_offline()
    import bitsandbytes
    import os
    print(os.environ.get("HF_HUB_OFFLINE"))
""")


def test_no_hub_kernel_noise_and_no_network_outside_downloads(monkeypatch, capsys):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(ROOT)
    loud = subprocess.run([sys.executable, "-c", NOISY_IMPORT, "loud"], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "kernels-community" in loud.stderr  # the library's own line, without the project's guard
    quiet = subprocess.run([sys.executable, "-c", NOISY_IMPORT, "quiet"], capture_output=True, text=True,
                           timeout=120, env=env, check=False)
    assert quiet.returncode == 0 and "kernels-community" not in quiet.stderr
    assert quiet.stdout.strip() == "1"

    from medalpaca_desktop import cli

    for command, offline in ((["--version"], "1"), (["download", "--help"], None)):
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(key, raising=False)
        with pytest.raises(SystemExit):
            cli.main(command)
        assert os.environ.get("HF_HUB_OFFLINE") == offline, command  # only a download may go online
    capsys.readouterr()
