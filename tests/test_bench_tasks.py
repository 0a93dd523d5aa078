"""The medical suite's tasks (bench/tasks.py): catalog, readers, lm-eval-exact prompts, download, runs.

The prompts are checked against lm-evaluation-harness itself: each task is built from lm-eval's own
task YAML (installed with the test extras) over the fixture parquet files, and every request it would
send (context, continuation) and its target must equal ours, character for character.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.task_fixtures import MEDMCQA_ROWS, MEDQA_ROWS, MMLU_ROWS, PUBMEDQA_ROWS, task_file_bytes, write_task_files

from bench.prompts import build_prompt
from bench.tasks import TaskError, TaskSpec, get_task, load_catalog, load_task, parse_catalog

MULTIMEDQA = ["pubmedqa", "medmcqa", "medqa_4options", "mmlu_anatomy", "mmlu_clinical_knowledge",
              "mmlu_college_medicine", "mmlu_medical_genetics", "mmlu_professional_medicine", "mmlu_college_biology"]
#: lm-eval's task files for each task (lm_eval/tasks/...), the reference the prompts are held to.
LMEVAL_YAML = {"medqa_4options": "medqa/medqa.yaml", "medmcqa": "medmcqa/medmcqa.yaml",
               "pubmedqa": "pubmedqa/pubmedqa.yaml",
               **{f"mmlu_{s}": f"mmlu/default/mmlu_{s}.yaml" for s in MMLU_ROWS}}
ROWS = {"medqa_4options": MEDQA_ROWS, "medmcqa": MEDMCQA_ROWS, "pubmedqa": PUBMEDQA_ROWS,
        **{f"mmlu_{s}": rows for s, rows in MMLU_ROWS.items()}}


@pytest.fixture(scope="module")
def task_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_task_files(root)
    return root


def folder_of(spec: TaskSpec, root: Path) -> Path:
    return root / spec.repo_id.replace("/", "--")


# ------------------------------------------------------------------ the catalog


def test_catalog_holds_lmeval_multimedqa_and_the_papers_usmle():
    catalog = load_catalog()
    assert sorted(t.key for t in catalog.expand("multimedqa")) == sorted(MULTIMEDQA)  # lm-eval's group
    assert [t.key for t in catalog.expand("usmle")] == ["usmle"]
    assert len(catalog.expand("multimedqa,usmle")) == 10 == len(catalog.expand("all"))
    sizes = {t.key: t.questions for t in catalog.tasks}
    assert sizes == {"medqa_4options": 1273, "medmcqa": 4183, "pubmedqa": 500, "mmlu_anatomy": 135,
                     "mmlu_clinical_knowledge": 265, "mmlu_college_biology": 144, "mmlu_college_medicine": 173,
                     "mmlu_medical_genetics": 100, "mmlu_professional_medicine": 272, "usmle": 374}
    assert get_task("medmcqa").split == "validation" and "validation" in get_task("medmcqa").caveat
    assert get_task("pubmedqa").choices == "texts" and get_task("pubmedqa").metrics == ("acc",)
    with pytest.raises(TaskError, match="unknown task 'medqa'.*known tasks"):
        catalog.expand("medqa")


def test_catalog_schema_errors_are_one_sentence():
    good = (Path(__file__).parents[1] / "resources" / "benchmark_tasks.yaml").read_text()
    for broken, match in [(good.replace("reader: mmlu", "reader: jinja", 1), "reader must be one of"),
                          (good.replace("choices: texts", "choices: words"), "choices must be one of"),
                          (good.replace('prompt: "Question: {question}\\n{options}Answer:"',
                                        'prompt: "{doc.__class__}"', 1), "prompt may use"),
                          (good.replace("questions: 500", "questions: many"), "positive whole number"),
                          ("version: 2\n", "version: 1")]:
        with pytest.raises(TaskError, match=match):
            parse_catalog(broken)


def test_an_undownloaded_task_says_how_to_get_it(tmp_path):
    spec = get_task("medmcqa")
    with pytest.raises(TaskError) as info:
        load_task(spec, tmp_path / "nothing")
    assert "not downloaded yet" in str(info.value)
    assert "medalpaca download --dataset openlifescienceai/medmcqa --revision refs/convert/parquet" in str(info.value)


def test_a_broken_parquet_file_is_one_sentence(tmp_path):
    spec = get_task("medqa_4options")
    path = tmp_path / "default" / "test" / "0000.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(TaskError, match="cannot be read as a parquet file.*download the task again"):
        load_task(spec, tmp_path)


def test_rows_missing_a_column_name_the_file_and_row(tmp_path):
    from helpers.task_fixtures import _parquet

    rows = [dict(MEDMCQA_ROWS[0]), {k: v for k, v in MEDMCQA_ROWS[1].items() if k != "cop"}]
    _parquet(tmp_path / "default" / "validation" / "0000.parquet", rows)
    with pytest.raises(TaskError, match=r"0000.parquet row 2: 'cop' must be an option index 0-3"):
        load_task(get_task("medmcqa"), tmp_path)


# ------------------------------------------------------------------ readers keep the raw text


def test_readers_keep_every_text_as_the_dataset_has_it(task_root):
    medqa = load_task(get_task("medqa_4options"), folder_of(get_task("medqa_4options"), task_root))
    assert [q.id for q in medqa.questions] == ["fx-1", "fx-2", "fx-3"]
    assert medqa.questions[0].question.startswith("  A 34-year-old")  # the space lm-eval keeps
    assert medqa.questions[2].options == {"A": "croup", "B": "epiglottitis", "C": "", "D": "  asthma"}
    assert [q.gold for q in medqa.questions] == ["A", "C", "A"]
    assert medqa.kind == "task:medqa_4options" and len(medqa.sha256) == 64

    pubmed = load_task(get_task("pubmedqa"), folder_of(get_task("pubmedqa"), task_root))
    assert [q.gold for q in pubmed.questions] == ["A", "C", "B"]  # yes, maybe, no
    assert pubmed.questions[0].meta["context"].endswith("\n Stays were shorter in that group. ")
    assert pubmed.questions[2].meta["context"] == ""

    anatomy = load_task(get_task("mmlu_anatomy"), folder_of(get_task("mmlu_anatomy"), task_root))
    assert anatomy.questions[0].question == "Which bone forms the point of the elbow?"  # MMLU's template strips
    assert anatomy.questions[0].options["B"] == " Head of the radius"  # ... its choices it does not

    usmle = load_task(get_task("usmle"), folder_of(get_task("usmle"), task_root))
    assert usmle.questions and all(q.meta["task"] == "usmle" for q in usmle.questions)
    assert usmle.excluded  # the image questions left out, as the paper did


# ------------------------------------------------------------------ prompts equal lm-eval's


def _lmeval_requests(key: str, folder: Path) -> list[tuple[list[tuple[str, str]], int | str]]:
    """lm-eval's own task (from its YAML) over the fixture file: [(request arguments, target)] per doc."""
    pytest.importorskip("lm_eval", reason="lm-eval comes with the test extras (pip install -e .[test])")
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    spec = get_task(key)
    files = [str(p) for p in spec.local_files(folder)]
    config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / LMEVAL_YAML[key])
    splits = {name: files for name in ("train", "validation", "test", "dev")}
    config.update(dataset_path="parquet", dataset_name=None, dataset_kwargs={"data_files": splits})
    task = ConfigurableTask(config=config)
    out = []
    for doc in task.test_docs():
        ctx = task.fewshot_context(doc, 0)
        requests = task.construct_requests(doc=doc, ctx=ctx, metadata=(key, 0, 0))
        out.append(([tuple(r.arguments) for r in requests], task.doc_to_target(doc)))
    return out


@pytest.mark.parametrize("key", list(LMEVAL_YAML))
def test_loglikelihood_requests_equal_lmevals_own(key, task_root, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = get_task(key)
    folder = folder_of(spec, task_root)
    theirs = _lmeval_requests(key, folder)
    ours = load_task(spec, folder).questions
    assert len(ours) == len(theirs) == len(ROWS[key])
    for q, (requests, target) in zip(ours, theirs, strict=True):
        prompt = build_prompt(q, "loglikelihood", "lm-eval", None, spec)
        assert [(prompt.text, c) for c in prompt.continuations.values()] == requests
        gold_index = list(q.options).index(q.gold)
        assert target in (gold_index, q.options[q.gold])  # lm-eval's target: an index, or the answer word


def test_pubmedqa_scores_the_answer_words_and_normalises_by_their_length(task_root):
    spec = get_task("pubmedqa")
    q = load_task(spec, folder_of(spec, task_root)).questions[0]
    prompt = build_prompt(q, "loglikelihood", "lm-eval", None, spec)
    assert prompt.text.startswith("Abstract: We followed 120 patients") and prompt.text.endswith("\nAnswer:")
    assert prompt.continuations == {"A": " yes", "B": " no", "C": " maybe"}
    assert prompt.choices == {"A": "yes", "B": "no", "C": "maybe"}
    paper = build_prompt(q, "generate", "medalpaca", None, spec)
    assert "Abstract: We followed" in paper.text and "A: yes\nB: no\nC: maybe" in paper.text


# ------------------------------------------------------------------ download through the hub worker


def test_download_fetches_the_split_with_its_revision_and_checksums(task_root, tmp_path, monkeypatch):
    import subprocess

    from hub_server import HubServer

    spec = get_task("medmcqa")
    files = task_file_bytes(folder_of(spec, task_root))
    files["default/train/0000.parquet"] = b"PAR1" + b"\0" * 5000  # the train split: not fetched
    server = HubServer()
    server.add_dataset(spec.repo_id, files, refs=("refs/convert/parquet",))
    server.start()
    try:
        home = tmp_path / "home"
        env = {**__import__("os").environ, "HF_ENDPOINT": server.url, "MEDALPACA_DESKTOP_HOME": str(home)}
        proc = subprocess.run(spec.download_command(), capture_output=True, text=True, env=env, timeout=120,
                              cwd=Path(__file__).parents[1])
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        server.stop()
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(home))
    assert spec.downloaded() and [p.name for p in spec.local_files()] == ["0000.parquet"]
    assert not (spec.folder() / "default" / "train").exists()
    dataset = load_task(spec)
    assert [q.id for q in dataset.questions] == ["mm-1", "mm-2", "mm-3"]
    assert dataset.source["revision"] == "refs/convert/parquet" and dataset.source["commit"]
    import hashlib

    sha = hashlib.sha256(files["default/validation/0000.parquet"]).hexdigest()
    assert dataset.source["files"] == {"default/validation/0000.parquet": sha}


# ------------------------------------------------------------------ a run of a task


@pytest.mark.parametrize(("key", "backend"), [("medmcqa", "llamacpp"), ("pubmedqa", "llamacpp"),
                                              ("mmlu_anatomy", "llamacpp"), ("pubmedqa", "hf"), ("usmle", "hf")])
def test_a_task_runs_in_loglikelihood_mode_and_records_its_source(key, backend, task_root, tiny_gguf,
                                                                   tiny_llama_dir, tmp_path):
    from test_bench_run import Recorder

    from bench.config import BenchConfig
    from bench.run import run_job

    spec = get_task(key)
    out = tmp_path / "run"
    model = tiny_gguf if backend == "llamacpp" else tiny_llama_dir
    cfg = BenchConfig(model=str(model), task=key, data=str(folder_of(spec, task_root)), out=str(out),
                      mode="loglikelihood", prompt_style="lm-eval", limit=4).validate(check_paths=True)
    rec = Recorder()
    assert run_job(cfg, writer=rec) == 0, rec.of("error")
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    first = load_task(spec, folder_of(spec, task_root)).questions[0]
    assert len(items) == min(4, len(ROWS.get(key, items)))
    scored = next(it for it in items if it["id"] == first.id)  # batched: scored longest prompt first
    assert set(scored["scores"]) == set(first.options)
    assert scored["prompt"] == spec.lmeval_text(first)
    record = json.loads((out / "summary.json").read_text())["record"]
    assert record["task"] == key and record["dataset_kind"] == f"task:{key}" and record["backend"] == backend
    assert record["dataset_source"]["repo_id"] == spec.repo_id


def test_a_task_without_data_reads_the_download_folder(tmp_path, tiny_gguf, monkeypatch):
    from test_bench_run import Recorder

    from bench.config import BenchConfig
    from bench.run import run_job

    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(tmp_path / "home"))
    cfg = BenchConfig(model=str(tiny_gguf), task="pubmedqa", out=str(tmp_path / "run"),
                      mode="loglikelihood", prompt_style="lm-eval").validate(check_paths=True)
    rec = Recorder()
    assert run_job(cfg, writer=rec) == 2
    error = rec.of("error")[0]
    assert error.kind == "dataset" and "not downloaded yet" in error.message
    write_task_files(get_task("pubmedqa").folder().parent)
    assert run_job(cfg, writer=Recorder()) == 0


def test_own_medqa_files_keep_their_whitespace_like_lmeval(tmp_path):
    """A user's own MedQA JSONL (lm-eval's columns) with the lm-eval preset renders lm-eval's doc_to_text."""
    pytest.importorskip("lm_eval", reason="lm-eval comes with the test extras (pip install -e .[test])")
    import importlib.util

    import lm_eval

    from bench.datasets import load_dataset

    path = Path(lm_eval.__file__).parent / "tasks" / "medqa" / "preprocess_medqa.py"
    spec = importlib.util.spec_from_file_location("lmeval_preprocess_medqa", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    data = tmp_path / "medqa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MEDQA_ROWS), encoding="utf-8")
    questions = load_dataset(data, "medqa").questions
    for q, row in zip(questions, MEDQA_ROWS, strict=True):
        prompt = build_prompt(q, "loglikelihood", "lm-eval")
        assert prompt.text == module.doc_to_text(row)
        assert list(prompt.continuations.values()) == [" A", " B", " C", " D"]
