"""The Medical Meadow catalog (resources/medical_meadow.yaml) and `medalpaca download --dataset`.

Counts and ids are checked against the table below, copied from the paper's repository
(kbressem/medAlpaca, DATA_DESCIPTION.md, section "Medical Meadow"). Downloads run against the
local imitation of the hub (tests/hub_server.py): nothing leaves the machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer

from medalpaca_desktop.core.events import parse_line
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.hub import dataset_folder, datasets_dir, downloads_dir
from medalpaca_desktop.hub import download as dl
from medalpaca_desktop.hub.meadow import (
    MeadowCatalogError,
    load_meadow_catalog,
    meadow_dataset,
    parse_meadow_catalog,
    training_total,
)

REPO = Path(__file__).resolve().parents[1]

# name -> (records, Hugging Face id or None), as DATA_DESCIPTION.md lists them.
PAPER = {
    "Anki flashcards": (33_955, None),
    "Stack Exchange academia": (39_633, None),
    "Stack Exchange biology": (7_482, None),
    "Stack Exchange fitness": (3_026, None),
    "Stack Exchange health": (1_428, None),
    "Stack Exchange bioinformatics": (906, None),
    "WikiDoc living textbook": (67_704, None),
    "WikiDoc patient information": (5_942, None),
    "USMLE self-assessment Step 1": (119, "medalpaca/medical_meadow_usmle_self_assessment"),
    "USMLE self-assessment Step 2": (120, "medalpaca/medical_meadow_usmle_self_assessment"),
    "USMLE self-assessment Step 3": (135, "medalpaca/medical_meadow_usmle_self_assessment"),
    "MEDIQA": (2_208, "medalpaca/medical_meadow_mediqa"),
    "CORD-19": (1_056_660, "medalpaca/medical_meadow_cord19"),
    "MMMLU": (3_787, "medalpaca/medical_meadow_mmmlu"),
    "MedQA": (10_178, "medalpaca/medical_meadow_medqa"),
    "PubMed health advice": (8_676, "medalpaca/medical_meadow_health_advice"),
    "PubMed causal": (2_446, "medalpaca/medical_meadow_pubmed_causal"),
    "ChatDoctor": (215_000, None),
}

DATASET = "test-org/medical_meadow_tiny"
RECORDS = [{"instruction": "Answer this question truthfully", "input": "What is the normal resting heart rate?",
            "output": "60 to 100 beats per minute in adults."}] * 3


def test_catalog_matches_the_paper():
    entries = load_meadow_catalog()
    assert {e.name: (e.records, e.hf_id) for e in entries} == PAPER
    assert training_total(entries) == sum(n for name, (n, _) in PAPER.items() if "USMLE" not in name)


def test_usmle_is_for_testing_and_wikidoc_carries_its_quality_note():
    entries = load_meadow_catalog()
    usmle = [e for e in entries if e.name.startswith("USMLE")]
    assert len(usmle) == 3 and all(e.use == "test" and not e.for_training for e in usmle)
    assert all("not training" in e.note for e in usmle)
    wikidoc = [e for e in entries if e.name.startswith("WikiDoc")]
    assert len(wikidoc) == 2 and all("30 %" in e.note for e in wikidoc)
    assert all(e.for_training for e in entries if e not in usmle)


def test_download_command_and_folder():
    medqa = meadow_dataset("medqa")
    assert medqa.downloadable
    assert medqa.download_command()[-3:] == ["--dataset", "medalpaca/medical_meadow_medqa", "--jsonl"]
    assert medqa.folder() == datasets_dir() / "medalpaca--medical_meadow_medqa"
    assert medqa.local_files() == []
    anki = meadow_dataset("anki_flashcards")
    assert not anki.downloadable and anki.folder() is None
    with pytest.raises(MeadowCatalogError):
        anki.download_command()


@pytest.mark.parametrize("doc, words", [
    ("version: 2\ndatasets: []", "version: 1"),
    ("version: 1\ndatasets: [{key: a}]", "missing"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: created, records: -1, use: train, description: d}]",
     "records"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: made, records: 1, use: train, description: d}]", "origin"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: created, records: 1, use: eval, description: d}]", "use"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: created, records: 1, use: train, description: d, "
     "hf_id: nope}]", "hf_id"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: created, records: 1, use: train, description: d, x: 1}]",
     "unknown"),
    ("version: 1\ndatasets: [{key: a, name: A, origin: created, records: 1, use: train, description: d},"
     " {key: a, name: B, origin: created, records: 1, use: train, description: d}]", "twice"),
])
def test_schema_errors_name_the_problem(doc, words):
    with pytest.raises(MeadowCatalogError, match=words):
        parse_meadow_catalog(doc)


# ---------------------------------------------------------------- downloading through the hub worker

@pytest.fixture
def hub(monkeypatch):
    server = HubServer()
    server.add_dataset(DATASET, {
        "medical_meadow_tiny.json": json.dumps(RECORDS).encode(),
        "README.md": b"---\nlicense: cc\n---\n# tiny meadow\n",
        ".gitattributes": b"*.json filter=lfs\n",
    })
    server.add_repo("test-org/a-model", {"model.gguf": b"GGUF" + b"\0" * 100})
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as every app worker has it: the download lifts it for itself
    yield server
    server.stop()


def medalpaca(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_dataset_download_lands_in_the_datasets_folder(hub):
    proc = medalpaca("download", "--dataset", DATASET, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [e for e in (parse_line(line) for line in proc.stdout.splitlines()) if e is not None]
    assert events[0].type == "started" and events[0].info["repo_type"] == "dataset"
    assert any(e.type == "progress" and e.stage == "download" for e in events)
    result = next(e for e in events if e.type == "result").data
    assert result["repo_type"] == "dataset" and sorted(result["files"]) == ["README.md", "medical_meadow_tiny.json"]
    assert events[-1].type == "done" and events[-1].ok

    folder = dataset_folder(DATASET)
    assert folder == datasets_dir() / "test-org--medical_meadow_tiny"
    assert json.loads((folder / "medical_meadow_tiny.json").read_text()) == RECORDS
    assert not (folder / ".gitattributes").exists()
    assert not (downloads_dir() / "test-org--medical_meadow_tiny").exists(), "datasets never go to models/"
    assert any(r.path.startswith("/api/datasets/") for r in hub.requests)
    assert any(r.path.startswith("/datasets/") and "/resolve/" in r.path for r in hub.gets(".json"))

    again = medalpaca("download", "--dataset", DATASET)  # already there: nothing fetched twice
    assert again.returncode == 0, again.stderr
    assert len(hub.gets("medical_meadow_tiny.json")) == 1


def test_a_dataset_id_is_not_a_model_id(hub):
    proc = medalpaca("download", DATASET, "--list")
    assert proc.returncode == 2 and "No model" in proc.stderr
    proc = medalpaca("download", "--dataset", "test-org/a-model", "--list")
    assert proc.returncode == 2 and "No dataset 'test-org/a-model'" in proc.stderr
    listing = medalpaca("download", "--dataset", DATASET, "--list", "--jsonl")
    assert listing.returncode == 0, listing.stderr
    result = next(e for e in (parse_line(x) for x in listing.stdout.splitlines()) if e and e.type == "result").data
    assert result["repo_type"] == "dataset" and result["dest"] == str(dataset_folder(DATASET))


def test_dataset_download_offline_says_it_cannot_reach_the_hub(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    proc = medalpaca("download", "--dataset", "medalpaca/medical_meadow_medqa")
    assert proc.returncode == ExitCode.FAILED  # the request was right; the network failed
    assert "Could not reach the Hugging Face hub" in proc.stderr and "Traceback" not in proc.stderr


def test_dataset_selection_takes_every_data_file():
    files = [dl.RemoteFile("data/train.json", 10), dl.RemoteFile(".gitattributes", 5), dl.RemoteFile("x.gguf", 3)]
    assert [f.path for f in dl.select_files(files, None, "dataset")] == ["data/train.json", "x.gguf"]
    with pytest.raises(dl.DownloadError, match="repo_type"):
        dl.list_repo("a/b", repo_type="space")
