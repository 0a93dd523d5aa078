"""Our GGUF export against llama.cpp's own convert_hf_to_gguf.py, tensor for tensor and key for key.

Why: a user who exports here and a user who runs llama.cpp's converter must get the same
file. The reference is the converter vendored in the llama-cpp-python sdist of the
installed version (the llama.cpp that will load the file). For every architecture family
of the loop (tests/model_factory.py FAMILIES) a tiny fixture is converted both ways, at
f32 and q8_0, and compared:

- tensors: the same names, types, shapes and bytes;
- metadata: the same keys (general.* aside: names, sizes, licenses the converter guesses
  from folder names) and the same values.

One adjustment is made to the reference, and printed: it names a BPE pre-tokenizer only
for tokenizers whose fingerprint it lists, so for a tiny freshly trained tokenizer it
would refuse; it is then handed the pre-tokenizer name our exporter chose (from the
tokenizer.json structure), so everything else can be compared.

Run:  .venv/bin/python -m perf.export_vs_llamacpp [--families llama,gemma2] [--types f32,q8_0]
      [--sdist PATH.tar.gz] [--demo]
Exit status 1 when any family differs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path.home() / ".cache" / "medalpaca-desktop" / "llama-cpp-sdist"

#: The converter, run with the fingerprint fallback described in the module docstring.
_RUNNER = r'''
import sys
sys.argv = [sys.argv[0], *sys.argv[3:]]
fallback_pre = __import__("os").environ.get("FALLBACK_PRE") or None
sys.path.insert(0, {root!r})
import convert_hf_to_gguf
from conversion import base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        if fallback_pre is None:
            raise
        print(f"reference: unknown BPE fingerprint; using pre-tokenizer {{fallback_pre!r}}", file=sys.stderr)
        return fallback_pre
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
convert_hf_to_gguf.main()
'''


def fetch_reference(sdist: Path | None) -> Path:
    """The vendored llama.cpp folder (convert_hf_to_gguf.py, conversion/, gguf-py/) of the installed version."""
    version = importlib.metadata.version("llama_cpp_python")
    target = CACHE / version
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    if sdist is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        "--no-build-isolation", f"llama-cpp-python=={version}", "-d", str(CACHE)],
                       check=False, capture_output=True)
        found = sorted(CACHE.glob(f"llama_cpp_python-{version}.tar.gz"))
        if not found:  # pip's metadata step can fail after the download; the file is what matters
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                            f"llama-cpp-python=={version}", "-d", str(CACHE)], check=False, capture_output=True)
            found = sorted(CACHE.glob(f"llama_cpp_python-{version}.tar.gz"))
        if not found:
            raise SystemExit(f"could not fetch the llama-cpp-python {version} sdist; pass --sdist PATH")
        sdist = found[0]
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
        for m in members:
            m.name = m.name[len(prefix):]
        target.mkdir(parents=True, exist_ok=True)
        tar.extractall(target, members=members, filter="data")
    return target


def run_reference(ref: Path, model_dir: Path, out: Path, outtype: str, pre: str | None) -> str:
    import os

    script = out.parent / "run_reference.py"
    script.write_text(_RUNNER.format(root=str(ref)), encoding="utf-8")
    env = {**os.environ, "FALLBACK_PRE": pre or "", "PYTHONPATH": str(ref / "gguf-py")}
    proc = subprocess.run([sys.executable, str(script), "--", "--", str(model_dir), "--outfile", str(out),
                           "--outtype", outtype], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"reference converter failed on {model_dir.name}:\n{tail}")
    return "\n".join(line for line in proc.stderr.splitlines() if line.startswith("reference:"))


def _value(field: Any) -> Any:
    from gguf import GGUFValueType

    if not field.types:
        return None
    if field.types[0] == GGUFValueType.ARRAY:
        return [_scalar(field, i) for i in field.data]
    return _scalar(field, field.data[0])


def _scalar(field: Any, index: int) -> Any:
    from gguf import GGUFValueType

    part = field.parts[index]
    kind = field.types[-1]
    if kind == GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    value = part.tolist()
    value = value[0] if len(value) == 1 else value
    return round(value, 6) if isinstance(value, float) else value


def compare(ours: Path, theirs: Path) -> dict[str, Any]:
    """Tensor and metadata differences between two GGUF files."""
    from gguf import GGUFReader

    a, b = GGUFReader(ours), GGUFReader(theirs)
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    same = [n for n in ta if n in tb and ta[n].tensor_type == tb[n].tensor_type
            and list(ta[n].shape) == list(tb[n].shape) and bytes(ta[n].data.tobytes()) == bytes(tb[n].data.tobytes())]
    differ = sorted(n for n in ta if n in tb and n not in same)
    ka = {k: _value(f) for k, f in a.fields.items() if not k.startswith(("general.", "GGUF."))}
    kb = {k: _value(f) for k, f in b.fields.items() if not k.startswith(("general.", "GGUF."))}
    for key in ("general.architecture", "general.file_type"):
        ka[key], kb[key] = _value(a.fields[key]), _value(b.fields[key])
    ours_only = {k for k in ka if k not in kb and not k.startswith("medalpaca.")}
    # Added tokens transformers 5 records only in tokenizer.json: the reference writes them as [PAD] or as
    # plain pieces (see trainer/_gguf_vocab.py build_spm_vocab); counted apart, not as a difference.
    padded = _reference_padded(ka, kb)
    different = sorted(k for k in ka if k in kb and ka[k] != kb[k] and not (padded and k in _TOKEN_KEYS
                                                                           and _same_except(ka[k], kb[k], padded)))
    return {
        "reference_padded_tokens": [ka["tokenizer.ggml.tokens"][i] for i in padded],
        "tensors": len(tb),
        "tensors_identical": len(same),
        "tensors_different": differ,
        "tensors_missing": sorted(set(tb) - set(ta)),
        "tensors_extra": sorted(set(ta) - set(tb)),
        "keys_missing": sorted(set(kb) - set(ka)),
        "keys_extra": sorted(ours_only),
        "keys_different": different,
    }


_TOKEN_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def _reference_padded(ka: dict[str, Any], kb: dict[str, Any]) -> list[int]:
    """Token ids the reference left as "[PADn]" (unused) where ours holds a real added token."""
    ta, tb = ka.get("tokenizer.ggml.tokens") or [], kb.get("tokenizer.ggml.tokens") or []
    if len(ta) != len(tb):
        return []
    types_a, types_b = ka.get("tokenizer.ggml.token_type") or [], kb.get("tokenizer.ggml.token_type") or []
    padded = [i for i, (x, y) in enumerate(zip(ta, tb, strict=True))
              if x != y and y == f"[PAD{i}]" and types_b[i] == 5 and not x.startswith("[PAD")]
    # pieces of the model that are also added special tokens (Gemma's turn markers): control here, normal there
    unmarked = [i for i, (x, y) in enumerate(zip(ta, tb, strict=True))
                if x == y and types_a[i] == 3 and types_b[i] == 1]
    return sorted(padded + unmarked)


def _same_except(a: list[Any], b: list[Any], indices: list[int]) -> bool:
    skip = set(indices)
    return len(a) == len(b) and all(x == y for i, (x, y) in enumerate(zip(a, b, strict=True)) if i not in skip)


def ours_pre(path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return None if field is None else _value(field)


def main(argv: list[str] | None = None) -> int:
    import model_factory

    from trainer.export import ExportConfig, export_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(model_factory.FAMILIES))
    parser.add_argument("--types", default="f32,q8_0")
    parser.add_argument("--sdist", type=Path, default=None, help="a llama-cpp-python sdist already downloaded")
    parser.add_argument("--demo", action="store_true", help="also the demo model (SmolLM2-135M, de-quantized)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ref = fetch_reference(args.sdist)
    print(f"reference: {ref / 'convert_hf_to_gguf.py'}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folders: list[tuple[str, Path]] = []
        for family in [f for f in args.families.split(",") if f]:
            folders.append((family, model_factory.build_tiny_model(tmp / family / "model", family)))
        if args.demo:
            from trainer.gguf_import import dequantize_gguf_to_hf

            folders.append(("demo", dequantize_gguf_to_hf(model_factory.find_demo_gguf(), tmp / "demo" / "model")))
        for family, folder in folders:
            for outtype in args.types.split(","):
                ours = export_gguf(ExportConfig(model=folder, out=tmp / family / f"ours.{outtype}.gguf", quant=outtype))
                theirs = tmp / family / f"ref.{outtype}.gguf"
                note = run_reference(ref, folder, theirs, outtype, ours_pre(ours))
                row = {"family": family, "type": outtype, **compare(ours, theirs), "note": note}
                results.append(row)
                ok = _identical(row)
                print(f"{family:8s} {outtype:5s} tensors {row['tensors_identical']}/{row['tensors']} identical"
                      f"  keys missing {row['keys_missing'] or '-'} extra {row['keys_extra'] or '-'}"
                      f" different {row['keys_different'] or '-'}  {'OK' if ok else 'DIFFERS'}"
                      f"{_padded_note(row)}"
                      f"{'  (' + note + ')' if note else ''}")
                if row["tensors_different"] or row["tensors_missing"] or row["tensors_extra"]:
                    print(f"         tensors different {row['tensors_different'][:6]} missing "
                          f"{row['tensors_missing'][:6]} extra {row['tensors_extra'][:6]}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(_identical(r) for r in results) else 1


def _padded_note(row: dict[str, Any]) -> str:
    tokens = row["reference_padded_tokens"]
    return f"  (reference leaves added tokens {tokens} unmarked)" if tokens else ""


def _identical(row: dict[str, Any]) -> bool:
    return not any(row[k] for k in ("tensors_different", "tensors_missing", "tensors_extra", "keys_missing",
                                    "keys_extra", "keys_different"))


if __name__ == "__main__":
    raise SystemExit(main())
