"""The medical benchmark suite (resources/benchmark_tasks.yaml): tasks, groups, their files and prompts.

A task is a published question set scored the way lm-evaluation-harness scores it: its
hub files (fetched once by the download worker, `medalpaca download --dataset`, into
data_dir()/datasets/org--name), a reader that turns the split's rows into Questions, and
lm-eval's prompt for it (the text before the answer and the continuations compared).
Light (yaml and the standard library; pyarrow only while reading a task's parquet files),
so the Benchmark tab lists tasks and their download state without loading anything heavy.

The readers keep every text exactly as the dataset has it (leading spaces, empty options):
lm-eval renders the raw fields, and one stripped space changes a log-likelihood. Only
MMLU's question is stripped, because lm-eval's MMLU template strips it.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.questions import LETTERS, Question

READERS = ("medqa_hf", "medmcqa", "pubmedqa", "mmlu", "usmle")
CHOICES = ("letters", "texts")
METRICS = ("acc", "acc_norm")
_FIELDS = ("key", "title", "repo_id", "revision", "include", "split", "questions", "license", "reader", "prompt",
           "description", "choices", "metrics", "groups", "caveat")
_KEY_RE = re.compile(r"^[a-z0-9_]+$")
_PLACEHOLDERS = {"question", "options", "context", "description"}
PUBMEDQA_ANSWERS = ("yes", "no", "maybe")  # lm-eval's doc_to_choice for pubmedqa
OFFLINE_MESSAGE = ("Downloading a benchmark task needs a connection to the Hugging Face hub; once downloaded "
                   "it runs offline.")


class TaskError(ValueError):
    """A task that cannot be read: an off-schema catalog, missing or malformed files. One sentence."""


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task of the suite."""

    key: str
    title: str
    repo_id: str
    revision: str
    include: tuple[str, ...]
    split: str
    questions: int
    license: str
    reader: str
    prompt: str
    description: str
    choices: str
    metrics: tuple[str, ...]
    groups: tuple[str, ...]
    caveat: str

    # ------------------------------------------------------------------ files

    def folder(self) -> Path:
        """Where `medalpaca download --dataset` puts the repo's files."""
        from medalpaca_desktop.hub import dataset_folder

        return dataset_folder(self.repo_id)

    def local_files(self, folder: str | Path | None = None) -> list[Path]:
        """The split's files already on disk (sorted), empty when not downloaded."""
        base = Path(folder).expanduser() if folder else self.folder()
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            rel = path.relative_to(base).as_posix()
            if path.is_file() and not rel.startswith(".") and any(fnmatch.fnmatch(rel, p) for p in self.include):
                found.append(path)
        return sorted(found)

    def downloaded(self, folder: str | Path | None = None) -> bool:
        files = self.local_files(folder)
        if self.reader == "usmle":
            return {"step1.json", "step2.json", "step3.json"} <= {p.name for p in files}
        return bool(files)

    def download_command(self) -> list[str]:
        """The worker command that fetches the split's files (the GUI runs it as a job)."""
        cmd = [sys.executable, "-m", "medalpaca_desktop", "download", "--dataset", self.repo_id,
               "--revision", self.revision]
        for pattern in self.include:
            cmd += ["--include", pattern]
        return cmd + ["--jsonl"]

    # ------------------------------------------------------------------ prompts

    def continuations(self, q: Question, delimiter: str = " ") -> dict[str, str]:
        """letter -> what is scored after the prompt: the delimiter (lm-eval's target_delimiter is a
        space), then the choice (the letter, or PubMedQA's answer word)."""
        return {letter: delimiter + choice for letter, choice in self.choice_texts(q).items()}

    def choice_texts(self, q: Question) -> dict[str, str]:
        """letter -> the choice whose length in characters normalises acc_norm (lm-eval's doc_to_choice)."""
        if self.choices == "texts":
            return dict(q.options)
        return {letter: letter for letter in q.options}

    def lmeval_text(self, q: Question) -> str:
        """lm-eval's zero-shot context for the question: its description, then doc_to_text."""
        options = "".join(f"{letter}. {text}\n" for letter, text in q.options.items())
        return self.prompt.format(question=q.question, options=options, context=q.meta.get("context", ""),
                                  description=self.description)

    def medalpaca_input(self, q: Question) -> str:
        """The paper's input for this task: the abstract first where the task has one."""
        body = q.question + "\n" + "\n".join(f"{letter}: {text}" for letter, text in q.options.items())
        context = q.meta.get("context")
        return f"Abstract: {context}\n{body}" if context else body


# ------------------------------------------------------------------ the catalog


def _entry(index: int, raw: Any) -> TaskSpec:
    from medalpaca_desktop.hub import is_valid_repo_id
    from medalpaca_desktop.hub.catalog import check_fields

    where = f"benchmark_tasks.yaml, tasks[{index}]"
    check_fields(raw, where, _FIELDS, (), TaskError)
    key = raw["key"]
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise TaskError(f"{where}: key {key!r} must be lower case letters, digits and _")
    for name in ("title", "revision", "split", "license", "prompt", "description", "caveat"):
        if not isinstance(raw[name], str):
            raise TaskError(f"{where}: {name} must be text")
    if not isinstance(raw["repo_id"], str) or not is_valid_repo_id(raw["repo_id"]):
        raise TaskError(f"{where}: repo_id {raw['repo_id']!r} is not org/name")
    if raw["reader"] not in READERS:
        raise TaskError(f"{where}: reader must be one of {', '.join(READERS)}")
    if raw["choices"] not in CHOICES:
        raise TaskError(f"{where}: choices must be one of {', '.join(CHOICES)}")
    for name in ("include", "metrics", "groups"):
        if not isinstance(raw[name], list) or not raw[name] or not all(isinstance(v, str) for v in raw[name]):
            raise TaskError(f"{where}: {name} must be a non-empty list of text")
    if not set(raw["metrics"]) <= set(METRICS):
        raise TaskError(f"{where}: metrics must be among {', '.join(METRICS)}")
    count = raw["questions"]
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise TaskError(f"{where}: questions must be a positive whole number")
    used = set(re.findall(r"{(\w+)}", raw["prompt"]))
    if not used <= _PLACEHOLDERS or "question" not in used:
        raise TaskError(f"{where}: prompt may use {{question}}, {{options}}, {{context}}, {{description}} only")
    return TaskSpec(key=key, title=raw["title"], repo_id=raw["repo_id"], revision=raw["revision"],
                    include=tuple(raw["include"]), split=raw["split"], questions=count, license=raw["license"],
                    reader=raw["reader"], prompt=raw["prompt"], description=raw["description"],
                    choices=raw["choices"], metrics=tuple(raw["metrics"]), groups=tuple(raw["groups"]),
                    caveat=" ".join(raw["caveat"].split()))


@dataclass(frozen=True)
class Catalog:
    tasks: tuple[TaskSpec, ...]
    groups: dict[str, str]  # name -> description

    def task(self, key: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.key == key:
                return spec
        raise TaskError(f"unknown task {key!r}; known tasks: {', '.join(t.key for t in self.tasks)}; groups: "
                        f"{', '.join(self.groups)}")

    def members(self, group: str) -> list[TaskSpec]:
        return [t for t in self.tasks if group in t.groups]

    def expand(self, names: str | Iterable[str]) -> list[TaskSpec]:
        """Task keys and group names (a comma list or several) -> tasks in catalog order, each once."""
        if isinstance(names, str):
            names = [names]
        wanted: set[str] = set()
        for name in (n.strip() for item in names for n in item.split(",")):
            if not name:
                continue
            if name == "all":
                wanted.update(t.key for t in self.tasks)
            elif name in self.groups:
                wanted.update(t.key for t in self.members(name))
            else:
                wanted.add(self.task(name).key)
        if not wanted:
            raise TaskError("give at least one task or group (e.g. multimedqa,usmle)")
        return [t for t in self.tasks if t.key in wanted]


def parse_catalog(text: str) -> Catalog:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskError(f"benchmark_tasks.yaml is not valid YAML ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise TaskError("benchmark_tasks.yaml: expected a mapping with version: 1")
    groups = data.get("groups")
    raw_tasks = data.get("tasks")
    if not isinstance(groups, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in groups.items()):
        raise TaskError("benchmark_tasks.yaml: groups must map names to descriptions")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise TaskError("benchmark_tasks.yaml: tasks must be a non-empty list")
    tasks = tuple(_entry(i, raw) for i, raw in enumerate(raw_tasks))
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise TaskError("benchmark_tasks.yaml: a task key appears twice")
    for spec in tasks:
        unknown = set(spec.groups) - set(groups)
        if unknown:
            raise TaskError(f"benchmark_tasks.yaml: {spec.key} names unknown group(s) {', '.join(sorted(unknown))}")
    # a group may share its name with a task only when that task is all it holds (usmle)
    clash = {k for k in set(keys) & set(groups) if [t.key for t in tasks if k in t.groups] != [k]}
    if clash:
        raise TaskError(f"benchmark_tasks.yaml: {', '.join(sorted(clash))} is both a task and a group")
    return Catalog(tasks=tasks, groups=dict(groups))


_CATALOG: Catalog | None = None


def load_catalog() -> Catalog:
    """The shipped catalog (read once)."""
    global _CATALOG
    if _CATALOG is None:
        from resources import read_text

        _CATALOG = parse_catalog(read_text("benchmark_tasks.yaml"))
    return _CATALOG


def task_keys() -> tuple[str, ...]:
    return tuple(t.key for t in load_catalog().tasks)


def get_task(key: str) -> TaskSpec:
    return load_catalog().task(key)


# ------------------------------------------------------------------ reading a task's questions


def _rows(files: list[Path]) -> list[tuple[Path, int, dict[str, Any]]]:
    """(file, 0-based row, row) of every parquet file, in order."""
    import pyarrow.parquet as pq

    out: list[tuple[Path, int, dict[str, Any]]] = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors are many; each becomes one sentence
            raise TaskError(f"{path} cannot be read as a parquet file ({type(exc).__name__}: {exc}); download "
                            "the task again") from None
        out.extend((path, i, row) for i, row in enumerate(table.to_pylist()))
    return out


def _need_text(row: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise TaskError(f"{where}: {key!r} is {'missing' if value is None else 'not text'}")
    if not allow_empty and not value.strip():
        raise TaskError(f"{where}: {key!r} is empty")
    return value


def _gold(value: Any, n: int, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise TaskError(f"{where}: {key!r} must be an option index 0-{n - 1} (got {value!r})")
    return LETTERS[value]


def _question(spec: TaskSpec, path: Path, index: int, row: dict[str, Any]) -> Question:
    where = f"{path.name} row {index + 1}"
    if not isinstance(row, dict):
        raise TaskError(f"{where}: not a record")
    meta: dict[str, Any] = {"task": spec.key}
    ident = str(index)
    if spec.reader == "medqa_hf":  # lm-eval's preprocess_medqa: sent1, ending0..3, label
        question = _need_text(row, "sent1", where)
        options = {LETTERS[i]: _need_text(row, f"ending{i}", where, allow_empty=True) for i in range(4)}
        gold = _gold(row.get("label"), 4, where, "label")
        ident = str(row["id"]) if row.get("id") not in (None, "") else ident
    elif spec.reader == "medmcqa":  # utils_medmcqa: question, opa..opd, cop
        question = _need_text(row, "question", where)
        options = {letter: _need_text(row, key, where, allow_empty=True)
                   for letter, key in zip("ABCD", ("opa", "opb", "opc", "opd"))}
        gold = _gold(row.get("cop"), 4, where, "cop")
        ident = str(row["id"]) if row.get("id") not in (None, "") else ident
        for key in ("subject_name", "topic_name"):
            if isinstance(row.get(key), str):
                meta[key.split("_")[0]] = row[key]
    elif spec.reader == "pubmedqa":  # preprocess_pubmedqa: CONTEXTS joined by newlines, QUESTION, final_decision
        question = _need_text(row, "QUESTION", where)
        contexts = row.get("CONTEXTS")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise TaskError(f"{where}: 'CONTEXTS' must be a list of text")
        meta["context"] = "\n".join(contexts)
        options = {LETTERS[i]: answer for i, answer in enumerate(PUBMEDQA_ANSWERS)}
        decision = row.get("final_decision")
        if decision not in PUBMEDQA_ANSWERS:
            raise TaskError(f"{where}: 'final_decision' must be yes, no or maybe (got {decision!r})")
        gold = LETTERS[PUBMEDQA_ANSWERS.index(decision)]
    elif spec.reader == "mmlu":  # the MMLU template: question.strip(), choices[0..3], answer
        question = _need_text(row, "question", where).strip()
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise TaskError(f"{where}: 'choices' must be a list of 4 texts")
        options = dict(zip(LETTERS, choices))
        gold = _gold(row.get("answer"), 4, where, "answer")
        if isinstance(row.get("subject"), str):
            meta["subject"] = row["subject"]
    else:
        raise TaskError(f"{spec.key}: reader {spec.reader!r} does not read parquet rows")
    return Question(id=ident, step="", question=question, options=options, gold=gold, source=str(path),
                    line=None, meta=meta)


def load_task(spec: TaskSpec, folder: str | Path | None = None, limit: int | None = None) -> Any:
    """The task's questions as a bench.datasets.LoadedDataset; TaskError when it cannot be read.

    `folder`: where the task's files are (default: the app's datasets folder for its repo).
    """
    from bench.datasets import DatasetError, LoadedDataset, load_dataset

    base = Path(folder).expanduser() if folder else spec.folder()
    if not spec.downloaded(base):
        raise TaskError(f"{spec.title} is not downloaded yet (looked for {', '.join(spec.include)} in {base}); "
                        f"download it from the Benchmark tab or run: medalpaca download --dataset {spec.repo_id} "
                        f"--revision {spec.revision}")
    if spec.reader == "usmle":
        try:
            dataset = load_dataset(base, "usmle", limit=limit)
        except DatasetError as exc:
            raise TaskError(str(exc)) from None
        for q in dataset.questions:
            q.meta["task"] = spec.key
        dataset.source = _source(spec, base)
        dataset.kind = f"task:{spec.key}"
        return dataset
    files = spec.local_files(base)
    questions = [_question(spec, path, index, row) for path, index, row in _rows(files)]
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):  # ids must be unique for resume; fall back to positions
        for position, q in enumerate(questions):
            q.id = str(position)
    if limit:
        questions = questions[:limit]
    from bench.datasets import files_sha256

    return LoadedDataset(kind=f"task:{spec.key}", path=str(base), questions=questions,
                         sha256=files_sha256(files, base), source=_source(spec, base))


def _source(spec: TaskSpec, base: Path) -> dict[str, Any]:
    """Where the files came from, as the download recorded it (repo, revision, commit, checksums)."""
    import json

    from medalpaca_desktop.hub import MANIFEST_NAME

    try:
        manifest = json.loads((base / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    files = manifest.get("files") if isinstance(manifest, dict) else None
    files = files if isinstance(files, dict) else {}
    rels = {p.relative_to(base).as_posix() for p in spec.local_files(base)}
    return {"repo_id": spec.repo_id, "revision": manifest.get("revision", spec.revision) if manifest else spec.revision,
            "commit": manifest.get("commit") if manifest else None, "split": spec.split,
            "files": {rel: (files.get(rel) or {}).get("checksum") for rel in sorted(rels)}}
