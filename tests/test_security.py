"""Security, each as a test (issue 13): files from strangers never run code, never escape their folder.

- a pickle weights file whose unpickling would run code is never unpickled, on any path (chat,
  train, bench, export, inspect, merge, a resumed checkpoint), and even where the user allows
  pickle weights transformers/peft/torch load them with `weights_only=True`;
- a model folder's `auto_map` code is never imported (`trust_remote_code` stays off);
- a chat template that reaches for Python internals is refused with one sentence, in-process (the
  GUI's and the trainer's renderer) and in the chat host;
- hub file names cannot write outside the download folder;
- the app's folders are 0700 and its files 0600;
- chat, training and benchmarks work with no network at all (`unshare -n`).

Every "payload" here really runs code when loaded the unsafe way (test_the_payloads_are_live),
so a marker file that never appears means the code never ran.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.chat_protocol import ChatMessage, LoadSpec
from medalpaca_desktop.core.events import parse_line

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"


# ================================================================ payloads


class Payload:
    """Unpickling this runs `open(marker, "w")`: what a hostile .bin/.pt/.pth does with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def write_torch_payload(path: Path, marker: Path) -> Path:
    """A torch.save file (zip + data.pkl) as transformers, peft and the Trainer write them."""
    import torch

    torch.save({"model.embed_tokens.weight": Payload(marker)}, path)
    return path


def copy_model(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip) if skip else None)
    return dst


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran: code from a model file was executed"


@pytest.fixture
def pickle_model(tiny_llama_dir, tmp_path, marker) -> Path:
    """The tiny LLaMA with its weights replaced by a hostile pytorch_model.bin."""
    folder = copy_model(tiny_llama_dir, tmp_path / "pickle-model", skip=("*.safetensors", "*.safetensors.index.json"))
    write_torch_payload(folder / "pytorch_model.bin", marker)
    return folder


@pytest.fixture
def pickle_adapter(tiny_lora_dir, tmp_path, marker) -> Path:
    """The tiny LoRA adapter with a hostile adapter_model.bin instead of safetensors."""
    folder = copy_model(tiny_lora_dir, tmp_path / "pickle-adapter", skip=("*.safetensors",))
    write_torch_payload(folder / "adapter_model.bin", marker)
    return folder


def test_the_payload_is_live(tmp_path):
    """Loaded the unsafe way, the payload runs its code: the marker checks below can fail."""
    import torch

    probe = tmp_path / "probe"
    torch.load(write_torch_payload(tmp_path / "payload.bin", probe), weights_only=False)
    assert probe.read_text() == "code ran"


def test_hf_loader_refuses_pickle_weights_and_adapters(pickle_model, pickle_adapter, tiny_llama_dir, marker):
    from medalpaca_desktop.inference.base import InferenceError
    from medalpaca_desktop.inference.hf_model import load_causal_lm, merge_lora

    for call in (lambda: load_causal_lm(pickle_model),
                 lambda: load_causal_lm(tiny_llama_dir, adapter=pickle_adapter),
                 lambda: merge_lora(tiny_llama_dir, pickle_adapter)):
        with pytest.raises(InferenceError) as err:
            call()
        assert err.value.kind == "pickle_refused" and "pickle" in str(err.value)
    # Allowed by the user: transformers and peft still unpickle with weights_only=True, so the payload fails.
    for call in (lambda: load_causal_lm(pickle_model, allow_pickle=True),
                 lambda: load_causal_lm(tiny_llama_dir, adapter=pickle_adapter, allow_pickle=True)):
        with pytest.raises(Exception) as err:  # whatever the library raises; the point is the marker
            call()
        assert "weights_only" in str(err.value) or "Unpickl" in type(err.value).__name__, err.value


def test_a_safetensors_folder_with_a_stray_pickle_loads_only_the_safetensors(tiny_llama_dir, tmp_path, marker):
    from medalpaca_desktop.inference.hf_model import load_causal_lm

    folder = copy_model(tiny_llama_dir, tmp_path / "both")
    write_torch_payload(folder / "pytorch_model.bin", marker)
    assert load_causal_lm(folder).model is not None


def test_inspect_reads_pickle_folders_without_unpickling(pickle_model, pickle_adapter, marker):
    from medalpaca_desktop.core.models import inspect_model

    info = inspect_model(pickle_model)
    assert info.pickle_weights and not info.loadable_by_default
    inspect_model(pickle_adapter)


def test_chat_cli_refuses_pickle_weights(pickle_model, marker):
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "chat", "--model", str(pickle_model),
                           "--prompt", "Hi", "--jsonl"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None and e.type == "error"]
    assert errors and errors[0].kind == "pickle_refused" and "Traceback" not in proc.stderr


def test_chat_host_backend_refuses_pickles_even_when_allowed(tiny_llama_dir, pickle_model, pickle_adapter, marker):
    from medalpaca_desktop.inference.base import InferenceError, create_backend

    for allow in (False, True):  # allowed: torch's weights_only loader refuses the payload, in one sentence
        for spec in (LoadSpec(model=str(pickle_model), allow_pickle=allow),
                     LoadSpec(model=str(tiny_llama_dir), adapter=str(pickle_adapter), allow_pickle=allow)):
            with pytest.raises(InferenceError) as err:
                create_backend("hf").load(spec, lambda msg, frac: None)
            assert err.value.kind == "pickle_refused", err.value
            assert "\x1b" not in str(err.value) and "\n" not in str(err.value)


def test_train_refuses_a_pickle_base(pickle_model, tmp_path, marker):
    from test_train_run import make_config, write_records
    from test_train_run import run as train

    rc, rec = train(make_config(pickle_model, tmp_path / "run", write_records(tmp_path), max_steps=1))
    assert rc != 0
    error = rec.of("error")[0]
    assert error.kind == "pickle_refused" and error.message.startswith("pickle-model stores its weights as pickle")


def test_bench_refuses_pickle_models_and_adapters(pickle_model, pickle_adapter, tiny_llama_dir, tmp_path, marker):
    from test_bench_run import config as bench_config
    from test_bench_run import run as bench

    for n, (model, adapter) in enumerate(((pickle_model, None), (tiny_llama_dir, pickle_adapter))):
        rc, rec = bench(bench_config(model, tmp_path / f"run{n}", adapter=str(adapter) if adapter else None,
                                     mode="loglikelihood", limit=1))
        assert rc == 2, rec.events
        assert "pickle" in rec.of("error")[0].message


def test_export_refuses_pickle_models_and_adapters(pickle_model, pickle_adapter, tiny_llama_dir, tmp_path, marker):
    from trainer.export import ExportConfig, ExportError, export_gguf

    for n, (model, adapter) in enumerate(((pickle_model, None), (tiny_llama_dir, pickle_adapter))):
        with pytest.raises(ExportError) as err:
            export_gguf(ExportConfig(model=model, adapter=adapter, out=tmp_path / f"out{n}.gguf", quant="f32"))
        assert "pickle" in str(err.value).lower() or "safetensors" in str(err.value).lower()
        assert not (tmp_path / f"out{n}.gguf").exists()


def test_gguf_import_reads_the_gguf_alone_beside_a_hostile_pickle(tiny_gguf, tmp_path, marker):
    """A GGUF de-quantized for training from a folder that also holds a pytorch_model.bin (a Downloads folder)."""
    from trainer.gguf_import import dequantize_gguf_to_hf

    folder = tmp_path / "downloads"
    folder.mkdir()
    gguf = Path(shutil.copy2(tiny_gguf, folder / tiny_gguf.name))
    write_torch_payload(folder / "pytorch_model.bin", marker)
    (folder / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    out = dequantize_gguf_to_hf(gguf, tmp_path / "dequantized")
    assert list(out.glob("*.safetensors"))


def test_resume_never_unpickles_a_planted_checkpoint_file(tiny_llama_dir, tmp_path, marker):
    """A checkpoint folder copied in from elsewhere: optimizer, scheduler and rng state are refused, not run."""
    from test_train_run import make_config, write_records
    from test_train_run import run as train

    data = write_records(tmp_path)
    cfg = make_config(tiny_llama_dir, tmp_path / "run", data, max_steps=2, save_steps=2)
    rc, _ = train(cfg)
    assert rc == 0
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    planted = [name for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth") if (ckpt / name).is_file()]
    assert "optimizer.pt" in planted and "rng_state.pth" in planted
    for name in planted:
        write_torch_payload(ckpt / name, marker)
    rc, rec = train(make_config(tiny_llama_dir, tmp_path / "run", data, max_steps=4, save_steps=2), resume=True)
    assert rc != 0
    error = rec.of("error")[0]
    assert error.kind == "unsafe_checkpoint" and "checkpoint-2" in error.message, error.message


@functools.lru_cache(maxsize=1)
def _all_calls() -> tuple[tuple[str, int, ast.Call], ...]:
    """Every method-style call `x.y(...)` in the app's own packages, parsed once."""
    found = []
    for package in ("medalpaca_desktop", "trainer", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    found.append((str(path.relative_to(ROOT)), node.lineno, node))
    return tuple(found)


def _calls(attr: str) -> list[tuple[str, int, ast.Call]]:
    """Every call `x.attr(...)` in the app's own packages."""
    return [(where, line, call) for where, line, call in _all_calls()
            if isinstance(call.func, ast.Attribute) and call.func.attr == attr]


def test_our_code_has_no_unpickling_call_of_its_own():
    """Every pickle the app meets goes through transformers/peft/torch with weights_only=True (tests above)."""
    unsafe = {"torch.load", "pickle.load", "pickle.loads", "dill.load", "joblib.load", "accelerator.load_state",
              "yaml.load", "yaml.unsafe_load", "np.load", "numpy.load"}

    def is_unsafe(call: ast.Call) -> bool:
        name = ast.unparse(call.func)
        if name == "yaml.load":  # safe with a SafeLoader / CSafeLoader
            loader = next((k.value for k in call.keywords if k.arg == "Loader"), None)
            return loader is None or "safe" not in ast.unparse(loader).lower()
        if name == "torch.load":  # safe only as weights_only=True (trainer/convert.py reads pickle shards so)
            only = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            return not (isinstance(only, ast.Constant) and only.value is True)
        return name in unsafe

    found = [f"{where}:{line} {ast.unparse(call.func)}" for attr in ("load", "loads", "load_state", "unsafe_load")
             for where, line, call in _calls(attr) if is_unsafe(call)]
    assert found == []
    assert _calls("from_pretrained"), "the scan sees the code"


# ================================================================ code shipped with a model (auto_map)


def remote_code_model(base: Path, folder: Path, marker: Path, model_type: str) -> Path:
    """`base` with auto_map entries (config and tokenizer) pointing at modules that write `marker` on import."""
    copy_model(base, folder)
    code = f"open({str(marker)!r}, 'a').write(__name__ + ' was imported\\n')\n"
    for name in ("configuration_x.py", "modeling_x.py", "tokenization_x.py"):
        (folder / name).write_text(code, encoding="utf-8")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg.update(model_type=model_type, auto_map={"AutoConfig": "configuration_x.XConfig",
                                                "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", "tokenization_x.XTokenizerFast"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok), encoding="utf-8")
    return folder


@pytest.fixture
def custom_arch(tiny_llama_dir, tmp_path, marker) -> Path:
    """An architecture transformers does not know: it could only load by running the folder's code."""
    return remote_code_model(tiny_llama_dir, tmp_path / "custom-arch", marker, "x-custom")


@pytest.fixture
def known_arch_with_auto_map(tiny_llama_dir, tmp_path, marker) -> Path:
    """A LLaMA that also ships code (as many hub repos do): the built-in classes load it, the code stays unread."""
    return remote_code_model(tiny_llama_dir, tmp_path / "llama-auto-map", marker, "llama")


def test_the_remote_code_is_live(tiny_llama_dir, tmp_path):
    """With trust_remote_code=True transformers imports the folder's module: the marker checks can fail."""
    from transformers import AutoConfig

    probe = tmp_path / "probe"
    folder = remote_code_model(tiny_llama_dir, tmp_path / "live", probe, "x-custom")
    with pytest.raises(Exception):  # noqa: B017 - the module defines no class; importing it is the point
        AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert "was imported" in probe.read_text()


def test_chat_backend_never_imports_model_code(custom_arch, known_arch_with_auto_map, marker):
    from medalpaca_desktop.inference.base import InferenceError, create_backend

    with pytest.raises(InferenceError) as err:
        create_backend("hf").load(LoadSpec(model=str(custom_arch)), lambda msg, frac: None)
    assert err.value.kind == "unsupported" and "trust_remote_code" in str(err.value)
    backend = create_backend("hf")
    loaded = backend.load(LoadSpec(model=str(known_arch_with_auto_map)), lambda msg, frac: None)
    assert loaded.backend == "hf" and backend.tokenize("fever")
    backend.unload()


def test_inspect_bench_and_export_never_import_model_code(custom_arch, known_arch_with_auto_map, tmp_path,
                                                          marker):
    from test_bench_run import config as bench_config
    from test_bench_run import run as bench

    from medalpaca_desktop.core.models import inspect_model
    from trainer.export import ExportConfig, export_gguf

    assert not inspect_model(custom_arch).supported
    rc, rec = bench(bench_config(custom_arch, tmp_path / "bench", mode="loglikelihood", limit=1))
    assert rc == 2 and "trust_remote_code" in rec.of("error")[0].message
    # The exporter reads config.json, the safetensors and the tokenizer files itself: no class is instantiated.
    for n, folder in enumerate((custom_arch, known_arch_with_auto_map)):
        assert export_gguf(ExportConfig(model=folder, out=tmp_path / f"out{n}.gguf", quant="f32")).is_file()


def test_train_never_imports_model_code(custom_arch, known_arch_with_auto_map, tmp_path, marker):
    from test_train_run import make_config, write_records
    from test_train_run import run as train

    data = write_records(tmp_path)
    rc, rec = train(make_config(custom_arch, tmp_path / "custom", data, max_steps=1))
    error = rec.of("error")[0]  # refused by the checks before loading, or by the loader itself
    assert rc == 2 and error.kind == "unsupported" and ("x-custom" in error.message
                                                        or "trust_remote_code" in error.message), error.message
    rc, rec = train(make_config(known_arch_with_auto_map, tmp_path / "known", data, max_steps=1))
    assert rc == 0, rec.of("error")


def test_every_from_pretrained_says_trust_remote_code_and_none_turns_it_on():
    """transformers' default (None) may ask on a terminal or follow a future default: ours is always explicit.

    peft's PeftModel/PeftConfig take no such switch (an adapter carries no code).
    """
    calls = _calls("from_pretrained")
    assert len(calls) >= 8, calls  # the scan sees the loaders (model, tokenizers, peft)
    for where, line, call in calls:
        owner = ast.unparse(call.func.value)
        if owner in ("PeftModel", "PeftConfig"):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        assert "trust_remote_code" in keywords or None in keywords, f"{where}:{line} {ast.unparse(call)}"
        value = keywords.get("trust_remote_code")
        assert not (isinstance(value, ast.Constant) and value.value is True), f"{where}:{line}"


# ================================================================ chat templates that leave the sandbox


def escapes(marker: Path) -> list[str]:
    """Known ways out of a Jinja sandbox; the first few would create `marker` if they worked."""
    touch = f"open({str(marker)!r}, 'w')"
    run = f"os.system('touch {marker}')"
    return [
        f"{{{{ cycler.__init__.__globals__.os.{run} }}}}",
        f"{{{{ joiner.__init__.__globals__['os'].{run} }}}}",
        f"{{{{ namespace.__init__.__globals__.__builtins__.eval(\"{touch}\") }}}}",
        f"{{{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}}}",
        f"{{{{ self._TemplateReference__context.cycler.__init__.__globals__.os.{run} }}}}",
        "{{ self._TemplateReference__context }}",  # prints nothing in plain Jinja: refused here all the same
        "{{ lipsum.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__base__ }}",
        "{{ cycler['__init__']['__globals__'] }}",
        "{{ ''|attr('__class__')|attr('__mro__') }}",
        "{% set c = ''|attr('__cla' ~ 'ss__') %}{{ c }}",
        "{{ '{0.__class__.__mro__}'.format('') }}",
        "{{ '{m.__class__}'.format_map({'m': messages}) }}",
        "{{ '%s'|format(raise_exception.__globals__) }}",
        "{{ strftime_now.__globals__ }}",
        "{% for m in messages %}{{ m.items.__self__.__class__ }}{% endfor %}",
        "{{ dict.mro() }}",
        "{% set _ = messages.append({'role': 'system', 'content': 'injected'}) %}{{ messages }}",
        "{{ 'x' * 100000000 }}",  # resources: a 100 MB string
        "{{ 2 ** 10000000 }}",  # a huge integer
    ]


def test_escapes_are_refused_in_process(tmp_path, marker):
    """The renderer the GUI process, the host, the benchmark and the trainer share (core.prompts)."""
    from medalpaca_desktop.core.prompts import ModelPromptInfo, PromptError, render_chat_template, render_prompt

    convo = [ChatMessage("user", "What causes scurvy?")]
    for template in escapes(marker):
        with pytest.raises(PromptError) as err:
            render_chat_template(template, convo)
        assert str(err.value).startswith("the model's chat template tries to reach Python internals"), template
        assert "\n" not in str(err.value)
        with pytest.raises(PromptError):
            render_prompt("chat", ModelPromptInfo(chat_template=template), convo)
    # The same idioms on safe objects still work: repetition within bounds, str.format, dict methods.
    ok = ("{{ '-' * 3 }}{{ 2 ** 10 }}{{ '{0}!'.format(messages[0]['content']) }}"
          "{% for k, v in messages[0].items() %}{{ k }}{% endfor %}")
    assert render_chat_template(ok, convo) == "---1024What causes scurvy?!rolecontent"


def test_trainer_refuses_an_escaping_template_as_a_data_error(marker):
    from types import SimpleNamespace

    from trainer.data import DataError, build_prompt
    from trainer.data_sources import Record

    tokenizer = SimpleNamespace(chat_template=escapes(marker)[0], bos_token="<s>", eos_token="</s>")
    record = Record(instruction="What causes scurvy?", input="", output="Vitamin C deficiency.", where="data.jsonl:1")
    with pytest.raises(DataError, match="Python internals"):
        build_prompt(record, "chat", tokenizer)


@pytest.fixture
def evil_template_model(tiny_llama_dir, tmp_path, marker) -> Path:
    folder = copy_model(tiny_llama_dir, tmp_path / "evil-template")
    (folder / "chat_template.jinja").write_text(escapes(marker)[0], encoding="utf-8")
    return folder


def test_the_host_refuses_an_escaping_template_from_a_gguf(evil_template_model, tmp_path, marker):
    from medalpaca_desktop.core.models import inspect_model
    from trainer.export import ExportConfig, export_gguf

    gguf = export_gguf(ExportConfig(model=evil_template_model, out=tmp_path / "evil.gguf", quant="f32"))
    assert inspect_model(gguf).chat_template == escapes(marker)[0]  # the template travels in the metadata
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "chat", "--model", str(gguf), "--prompt",
                           "Hi", "--jsonl"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None and e.type == "error"]
    assert errors and "Python internals" in errors[0].message and "Traceback" not in proc.stderr


def test_the_hf_backend_hands_the_template_to_the_same_sandbox(evil_template_model, marker):
    from medalpaca_desktop.core.prompts import ModelPromptInfo, PromptError, render_prompt
    from medalpaca_desktop.inference.base import create_backend

    backend = create_backend("hf")
    loaded = backend.load(LoadSpec(model=str(evil_template_model)), lambda msg, frac: None)
    try:
        assert loaded.chat_template == escapes(marker)[0]
        with pytest.raises(PromptError, match="Python internals"):
            render_prompt("chat", ModelPromptInfo(chat_template=loaded.chat_template), [ChatMessage("user", "Hi")])
    finally:
        backend.unload()


# ================================================================ downloads stay in their folder


def hostile_names(outside: Path) -> list[str]:
    return ["../../evil", "../evil", str(outside / "abs-evil"), "a/../../b", "..\\x", "a\\..\\..\\c",
            "nul\x00name", "x" * 300, "a/" + "y" * 300, "z/" * 600 + "deep", ".download/lock",
            ".download/0000.part", ".medalpaca-download.json", "./dot", "a//b", "trailing/", "C:/windows",
            "c:evil", "\x1b]0;owned\x07", "tab\tname", "", "..", "."]


def test_unsafe_names_are_recognised(tmp_path):
    from medalpaca_desktop.hub import download as dl

    for name in hostile_names(tmp_path):
        assert dl.unsafe_name(name) is not None, name
        with pytest.raises(dl.DownloadError) as err:
            dl.target_path(tmp_path / "dest", dl.RemoteFile(path=name))
        assert err.value.kind == "unsafe_name"
    for name in ("config.json", "sub/dir/model-00001-of-00002.safetensors", "README.md", "..hidden-ish",
                 "a..b/c", "ünïcode.txt", "x" * 255):
        assert dl.unsafe_name(name) is None, name
    # A folder inside the destination that links outside it: nothing is placed through it.
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(dl.DownloadError):
        dl.target_path(dest, dl.RemoteFile(path="link/escaped.txt"))
    # A checksum from the hub is only part of a file name when it is hex.
    part = dl._part_path(dest / ".download", dl.RemoteFile(path="ok.bin", sha256="../../../etc/passwd"))
    assert part.parent == dest / ".download"


def test_a_hostile_listing_writes_nothing_outside_the_models_folder(tmp_path, app_home, monkeypatch):
    from hub_server import HubServer

    from medalpaca_desktop.hub import repo_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    good = {"config.json": b'{"model_type": "llama"}\n', "README.md": b"# fine\n", "sub/notes.txt": b"ok\n"}
    evil = {name: b"evil bytes\n" for name in hostile_names(outside)}
    before = {p for p in tmp_path.rglob("*")}
    with HubServer() as server:
        server.add_repo("test-org/hostile", {**good, **evil})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "download", "test-org/hostile",
                               "--include", "*", "--jsonl"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        fetched = {r.path for r in server.requests if "/resolve/" in r.path}
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    warning = next(e for e in events if e.type == "warning")
    assert warning.extra.get("kind") == "unsafe_name" and "\x1b" not in warning.message
    summary = next(e for e in events if e.type == "result").data
    assert sorted(summary["files"]) == sorted(good) and set(summary["refused"]) == set(evil)
    dest = repo_folder("test-org/hostile")
    written = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert written == set(good) | {".medalpaca-download.json"}
    assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    assert not list(outside.iterdir()), "an absolute name was written"
    assert {p for p in tmp_path.rglob("*")} - before == set(), "files appeared outside the app home"
    stray = [p for p in app_home.rglob("*") if p.is_file() and not p.is_relative_to(dest)]
    assert all(p.suffix in (".sqlite3", ".yaml") or p.name.startswith("medalpaca.sqlite3") for p in stray), stray
    assert all(not any(name in path for name in ("evil", "/b", "nul")) for path in fetched), fetched


# ================================================================ owner-only files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: the modes below come from the code, not from the user's umask."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_fresh_home_is_owner_only(app_home, tmp_path, open_umask):
    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.settings import AppSettings, save_settings
    from medalpaca_desktop.core.store import Store
    from medalpaca_desktop.ui.chat import export as chat_export
    from medalpaca_desktop.ui.chat.conversation import Conversation, Entry

    folders = [paths.data_dir(), paths.config_dir(), paths.cache_dir(), paths.runs_dir(), paths.exports_dir()]
    assert [oct(mode(f)) for f in folders] == [oct(0o700)] * len(folders)
    with Store() as store:
        store.create_chat("Sepsis")  # a write: the -wal and -shm files exist now
        db = paths.database_path()
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(f.exists() for f in files), files
        assert [oct(mode(f)) for f in files] == [oct(0o600)] * 3
    assert mode(save_settings(AppSettings())) == 0o600
    conv = Conversation(key="c:1", title="Sepsis")
    conv.entries = [Entry(None, "user", "Patient, 54, fever and hypotension.")]
    for name in ("chat.md", "chat.json"):
        assert mode(chat_export.export_conversation(conv, tmp_path / name)) == 0o600
    old = tmp_path / "old.md"  # an export over an existing world-readable file narrows it
    old.write_text("x")
    old.chmod(0o644)
    assert mode(chat_export.export_conversation(conv, old)) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_database_left_world_readable_is_narrowed(app_home):
    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.store import Store

    db = paths.database_path()
    with Store():
        pass
    for f in db.parent.glob(db.name + "*"):
        f.chmod(0o644)
    with Store():
        pass
    assert all(mode(f) == 0o600 for f in db.parent.glob(db.name + "*"))


# ================================================================ no network at all


def _no_network_prefix() -> list[str] | None:
    """`unshare -n` (root) or `unshare -rn` (an unprivileged user namespace), whichever this machine allows."""
    if not shutil.which("unshare"):
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


NO_NETWORK = _no_network_prefix()
needs_unshare = pytest.mark.skipif(NO_NETWORK is None, reason="this machine does not allow `unshare -n` or "
                                                              "`unshare -rn` (no network namespaces for this user)")


def offline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python -m medalpaca_desktop ARGS` in a network namespace with no interfaces but a downed loopback."""
    assert NO_NETWORK is not None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*NO_NETWORK, sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def _events(stdout: str) -> list:
    return [e for e in map(parse_line, stdout.splitlines()) if e is not None]


@needs_unshare
def test_the_namespace_really_has_no_network():
    probe = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 443), timeout=3)\n"
             "except OSError as exc:\n    print('unreachable', exc.errno)\nelse:\n    print('reachable')\n")
    proc = subprocess.run([*NO_NETWORK, sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.stdout.startswith("unreachable"), proc.stdout + proc.stderr


@needs_unshare
def test_chat_answers_with_no_network(tiny_gguf):
    proc = offline("chat", "--model", str(tiny_gguf), "--prompt", "Hi", "--max-tokens", "4", "--temperature", "0",
                   "--jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = _events(proc.stdout)[-1]
    assert done.type == "done" and done.ok and done.data["completion_tokens"] > 0


@needs_unshare
def test_bench_runs_with_no_network(tiny_llama_dir, tmp_path):
    proc = offline("bench", "--model", str(tiny_llama_dir), "--data", str(MEDQA), "--preset", "lm-eval",
                   "--limit", "2", "--out", str(tmp_path / "bench"), "--jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "bench" / "summary.json").read_text())["n_scored"] == 2


@pytest.mark.slow
@needs_unshare
def test_train_runs_with_no_network(tiny_llama_dir, tmp_path):
    from test_train_run import make_config, write_records

    path = tmp_path / "cfg.yaml"
    make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2).save(path)
    proc = offline("train", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = _events(proc.stdout)[-1]
    assert done.type == "done" and done.ok and done.data["steps"] == 2
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
