"""Pickle-only checkpoints -> safetensors (trainer/convert.py, `medalpaca convert`)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import parse_line


def _pickle_copy(src: Path, dst: Path, shards: int = 1) -> Path:
    """The tiny model as the paper's 13B ships: pytorch_model*.bin (transformers 5 itself writes only
    safetensors, so the shards are written with torch.save, as older transformers did)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    dst.mkdir()
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy2(path, dst / path.name)
    state = {}
    for file in sorted(src.glob("*.safetensors")):
        state.update(load_file(str(file)))
    names = list(state)
    if shards == 1:
        torch.save(state, dst / "pytorch_model.bin")
        return dst
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        torch.save({k: state[k] for k in part}, dst / file)
        weight_map.update(dict.fromkeys(part, file))
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def _logits(folder: Path, allow_pickle: bool = False):
    import torch

    from medalpaca_desktop.inference.hf_model import load_causal_lm

    model = load_causal_lm(folder, dtype=torch.float32, device="cpu", allow_pickle=allow_pickle).model
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 13, 2]])).logits


def test_a_sharded_pickle_model_converts_and_loads_as_safetensors(tiny_llama_dir, tmp_path):
    import torch

    from trainer.convert import convert_folder, default_out

    src = _pickle_copy(tiny_llama_dir, tmp_path / "old-model", shards=3)
    shards = sorted(src.glob("pytorch_model-*.bin"))
    assert len(shards) > 1 and (src / "pytorch_model.bin.index.json").is_file()
    seen: list[tuple[int, int]] = []
    out = convert_folder(src, progress=lambda done, total, name: seen.append((done, total)))
    assert out == default_out(src) == tmp_path / "old-model-safetensors"
    assert seen[0] == (0, len(shards)) and seen[-1] == (len(shards), len(shards))
    assert len(list(out.glob("model-*-of-*.safetensors"))) == len(shards)
    assert (out / "model.safetensors.index.json").is_file()
    assert not list(out.glob("*.bin")) and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    torch.testing.assert_close(_logits(out), _logits(src, allow_pickle=True), rtol=0, atol=0)  # the same weights
    assert not list(tmp_path.glob(".*partial"))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/never-written",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_is_written(tiny_llama_dir, tmp_path):
    from trainer.convert import ConvertError, convert_folder

    src = _pickle_copy(tiny_llama_dir, tmp_path / "evil")
    with open(src / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Payload()}, fh)
    with pytest.raises(ConvertError, match="cannot be read as tensors only") as info:
        convert_folder(src)
    assert info.value.kind == "pickle_refused"
    assert not (tmp_path / "evil-safetensors").exists() and not list(tmp_path.glob(".*partial"))
    assert not Path("/tmp/never-written").exists()


def test_cli_convert(tiny_llama_dir, tmp_path):
    src = _pickle_copy(tiny_llama_dir, tmp_path / "m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "medalpaca_desktop", "convert", str(src), "--out", str(tmp_path / "safe"), "--jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [e.type for e in events][-2:] == ["result", "done"] and events[-1].data["path"] == str(tmp_path / "safe")
    assert (tmp_path / "safe" / "model.safetensors").is_file()
    again = subprocess.run(cmd[:-1], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and again.stderr.strip().count("\n") == 0
    nothing = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "convert", str(tmp_path / "safe")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert nothing.returncode == 2 and "already has safetensors" in nothing.stderr
    assert json.loads((tmp_path / "safe" / "config.json").read_text())["model_type"] == "llama"
