"""The download catalog is data: one test validates every entry (litgpt config_hub style)."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest

from medalpaca_desktop.hub.catalog import CatalogEntry, CatalogError, load_catalog, parse_catalog
from resources import read_text


def test_shipped_catalog_follows_its_schema():
    entries = load_catalog()
    repos = {e.repo_id for e in entries}
    assert {"medalpaca/medalpaca-7b", "medalpaca/medalpaca-13b"} <= repos  # the paper's checkpoints
    ggufs = [e for e in entries if e.kind == "gguf"]
    assert len(ggufs) >= 2
    for entry in entries:
        assert entry.license and entry.name and entry.medical
        assert 0.1 < entry.size_gb < 100
        if entry.kind == "gguf":
            assert all(p.endswith(".gguf") for p in entry.include)
            assert entry.size_gb < 10, "catalog GGUFs are the quantized, laptop-sized ones"
        else:  # a transformers folder needs its config, a tokenizer and the weights
            for names in (["config.json"], ["tokenizer.json", "tokenizer.model"],
                          ["model-00001-of-00004.safetensors", "pytorch_model-00001-of-00003.bin"]):
                assert picks(entry, names), f"{entry.repo_id}: include picks none of {names}"


def picks(entry: CatalogEntry, names: list[str]) -> bool:
    return any(fnmatch(name, pattern) for name in names for pattern in entry.include)


BASE = """
version: 1
models:
  - repo_id: org/model-GGUF
    name: A model
    kind: gguf
    include: ["model.Q4_K_M.gguf"]
    size_gb: 4.1
    license: Apache-2.0
    medical: true
"""


@pytest.mark.parametrize(("old", "new", "message"), [
    ("repo_id: org/model-GGUF", "repo_id: not-a-repo-id", "not org/name"),
    ("kind: gguf", "kind: onnx", "kind must be one of"),
    ('include: ["model.Q4_K_M.gguf"]', "include: []", "include must be"),
    ('include: ["model.Q4_K_M.gguf"]', 'include: ["*.json"]', "must include a .gguf"),
    ("size_gb: 4.1", "size_gb: big", "size_gb"),
    ("medical: true", "medical: yes please", "medical must be"),
    ("    license: Apache-2.0\n", "", "missing license"),
    ("medical: true", "medical: true\n    homepage: x", "unknown field"),
    ("version: 1", "version: 2", "version: 1"),
])
def test_catalog_errors_name_the_problem(old, new, message):
    assert parse_catalog(BASE)  # the base document is valid
    with pytest.raises(CatalogError, match=message):
        parse_catalog(BASE.replace(old, new))


def test_duplicate_repo_is_refused():
    doubled = BASE + BASE.split("models:\n", 1)[1]
    with pytest.raises(CatalogError, match="listed twice"):
        parse_catalog(doubled)


def test_catalog_yaml_has_a_header_explaining_the_fields():
    text = read_text("model_catalog.yaml")
    assert "checked to exist on the" in text and "approximate" in text
