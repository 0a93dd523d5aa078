"""The medical suite's log-likelihood mode against lm-evaluation-harness, every task, side by side.

    .venv/bin/python -m perf.suite_vs_lmeval [--tasks multimedqa] [--long] [--batch-size 8] [--runs 1]

Same model, same questions, same prompts on both sides:
- the questions: the project's 72 sample questions (resources/sample_questions/medqa_sample_lmeval.jsonl,
  written for the project) rewritten into each task's own hub format (MedQA's sent1/ending*, MedMCQA's
  question/opa..opd/cop, PubMedQA's QUESTION/CONTEXTS/final_decision, MMLU's question/choices/answer),
  as parquet files laid out like the download (bench/tasks.py); `--long` joins three vignettes into
  one stem, ~250 tokens per prompt like real MedQA questions;
- lm-eval: its HF backend (`HFLM`) running lm-eval's own task YAMLs (lm_eval/tasks/...) with only
  the dataset switched to those parquet files, all tasks in one process (one model load);
- the engine: `medalpaca bench suite --preset lm-eval --backend hf` over the same files, one process.
The model is the bundled demo (SmolLM2-135M-Instruct Q4_1) de-quantized to fp32 HF.

Measured per task: prediction agreement (target >= 99 %), the largest log-likelihood difference
(target <= 2e-3); over the suite: questions/s while scoring and the whole-process time (target
>= 1.2x lm-eval), and the engine's scoring loop against the bare limit: the same batches through
`model()` alone in this process (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "resources" / "sample_questions" / "medqa_sample_lmeval.jsonl"
LMEVAL_YAML = {"medqa_4options": "medqa/medqa.yaml", "medmcqa": "medmcqa/medmcqa.yaml",
               "pubmedqa": "pubmedqa/pubmedqa.yaml"}
DECISIONS = ("yes", "no", "maybe")


def _lmeval_yaml(key: str) -> str:
    return LMEVAL_YAML.get(key) or f"mmlu/default/{key}.yaml"


# ------------------------------------------------------------------ the task files


def _samples(long: bool) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not long:
        return rows
    out = []
    for i, row in enumerate(rows):  # a longer vignette: two other cases' findings before this one's question
        others = [rows[(i + k) % len(rows)]["sent1"].rsplit(".", 1)[0] + "." for k in (17, 41)]
        out.append({**row, "sent1": " ".join(others + [row["sent1"]])})
    return out


def write_task_files(root: Path, keys: list[str], long: bool) -> None:
    """Every task's parquet files under `root` (an app datasets folder), in the task's own columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.tasks import get_task

    rows = _samples(long)
    rng = random.Random(0)

    def put(key: str, table: list[dict[str, Any]]) -> None:
        spec = get_task(key)
        rel = spec.include[0].replace("*", "0000")
        path = root / spec.repo_id.replace("/", "--") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(table), path)

    for key in keys:
        if key == "medqa_4options":
            put(key, [{"id": f"s{r['id']}", "sent1": r["sent1"], "sent2": "", **{f"ending{i}": r[f"ending{i}"]
                       for i in range(4)}, "label": r["label"]} for r in rows])
        elif key == "medmcqa":
            put(key, [{"id": f"m{r['id']}", "question": r["sent1"], "opa": r["ending0"], "opb": r["ending1"],
                       "opc": r["ending2"], "opd": r["ending3"], "cop": r["label"], "choice_type": "single",
                       "exp": None, "subject_name": "Medicine", "topic_name": None} for r in rows])
        elif key == "pubmedqa":
            put(key, [{"QUESTION": "Is " + r["ending" + str(r["label"])].lower() + " the answer here?",
                       "CONTEXTS": [r["sent1"]], "LABELS": ["METHODS"], "MESHES": [], "YEAR": "2020",
                       "reasoning_required_pred": "yes", "reasoning_free_pred": "yes",
                       "final_decision": rng.choice(DECISIONS), "LONG_ANSWER": ""} for r in rows])
        elif key.startswith("mmlu_"):
            put(key, [{"question": r["sent1"], "subject": key[5:], "choices": [r[f"ending{i}"] for i in range(4)],
                       "answer": r["label"]} for r in rows])


# ------------------------------------------------------------------ lm-eval side (own process)


def lmeval_worker(model: str, keys: list[str], datasets: Path, batch_size: int, out: Path) -> None:
    t_process = time.perf_counter()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    from bench.tasks import get_task

    t_load = time.perf_counter()
    lm = HFLM(pretrained=model, dtype="float32", device="cpu", batch_size=batch_size)
    loaded = time.perf_counter()
    scoring = {"seconds": 0.0}
    original = lm.loglikelihood

    def timed(requests: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            scoring["seconds"] += time.perf_counter() - start

    lm.loglikelihood = timed  # type: ignore[method-assign]
    configs = []
    for key in keys:
        spec = get_task(key)
        files = [str(p) for p in spec.local_files(datasets / spec.repo_id.replace("/", "--"))]
        config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / _lmeval_yaml(key))
        config.update(dataset_path="parquet", dataset_name=None,
                      dataset_kwargs={"data_files": {s: files for s in ("train", "validation", "test", "dev")}})
        configs.append(config)
    t_eval = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=configs, log_samples=True, num_fewshot=0)
    evaluated = time.perf_counter()
    per_task = {}
    for key in keys:
        per_task[key] = [{"doc_id": s["doc_id"], "lls": [float(r[0]) for r in s["filtered_resps"]],
                          "context": s["arguments"][0][0] if "arguments" in s else None}
                         for s in sorted(results["samples"][key], key=lambda s: s["doc_id"])]
    out.write_text(json.dumps({"tasks": per_task, "version": lm_eval.__version__, "import_s": t_load - t_process,
                               "load_s": loaded - t_load, "evaluate_s": evaluated - t_eval,
                               "scoring_s": scoring["seconds"]}))


def run_lmeval(model: Path, keys: list[str], datasets: Path, batch_size: int, work: Path) -> dict[str, Any]:
    out = work / f"lmeval-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "perf.suite_vs_lmeval", "--lmeval-worker", "--model", str(model), "--tasks",
           ",".join(keys), "--datasets", str(datasets), "--batch-size", str(batch_size), "--worker-out", str(out)]
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lm-eval run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["wall_s"] = wall
    return data


# ------------------------------------------------------------------ engine side (medalpaca bench suite)


def run_engine(model: Path, keys: list[str], home: Path, batch_size: int, work: Path) -> dict[str, Any]:
    out = work / f"suite-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "medalpaca_desktop", "bench", "suite", "--model", str(model), "--label", "demo",
           "--backend", "hf", "--tasks", ",".join(keys), "--preset", "lm-eval", "--batch-size", str(batch_size),
           "--out", str(out)]
    env = dict(os.environ, MEDALPACA_DESKTOP_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"medalpaca bench suite failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    tasks, scoring = {}, 0.0
    for key in keys:
        run_dir = out / "demo" / key
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
        ready = [e["time"] for e in events if e["type"] == "log" and ("Loaded " in e["message"]
                                                                        or "already loaded" in e["message"])]
        results = [e["time"] for e in events if e["type"] == "result" and e["data"].get("kind") == "item"]
        scoring += max(results) - ready[-1]
        items = [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines() if line.strip()]
        order = {str(q.id): i for i, q in enumerate(_questions(key, home))}
        tasks[key] = sorted(items, key=lambda it: order[str(it["id"])])  # scored longest first: back in file order
    return {"tasks": tasks, "wall_s": wall, "scoring_s": scoring}


def _questions(key: str, home: Path) -> list[Any]:
    os.environ["MEDALPACA_DESKTOP_HOME"] = str(home)
    from bench.tasks import get_task, load_task

    return list(load_task(get_task(key)).questions)


# ------------------------------------------------------------------ the bare limit (this process)


def bare_limit(model_dir: Path, keys: list[str], home: Path, batch_size: int, limit: int) -> dict[str, float]:
    """The engine's scoring loop vs the same batches through model() alone, timed here, twice each,
    on the first `limit` questions (the whole suite four more times would double the script's time)."""
    os.environ["MEDALPACA_DESKTOP_HOME"] = str(home)
    import torch

    from bench.prompts import build_prompt
    from bench.tasks import get_task, load_task
    from medalpaca_desktop.core.chat_protocol import LoadSpec
    from medalpaca_desktop.inference.base import create_backend
    from medalpaca_desktop.inference.hf_score import _last_position_logprobs, score_requests, token_budget

    backend: Any = create_backend("hf")
    backend.load(LoadSpec(model=str(model_dir), backend="hf"), lambda *_: None)
    requests = []
    for key in keys:
        spec = get_task(key)
        for q in load_task(spec).questions:
            prompt = build_prompt(q, "loglikelihood", "lm-eval", None, spec)
            requests.append(backend.encode_request(prompt.text, list(prompt.continuations.values())))
    model, tok = backend._model, backend._tokenizer
    single = [r for r in requests if all(len(c) == 1 for c in r[1])][:limit]
    budget = token_budget(model, "cpu")
    order = sorted(single, key=lambda r: -len(r[0]))
    groups: list[list[Any]] = []
    for r in order:  # the engine's grouping (hf_score.score_requests)
        if groups and len(groups[-1]) < batch_size and len(groups[-1][0][0]) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(r)
        else:
            groups.append([r])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    times: dict[str, list[float]] = {"engine": [], "bare": []}
    for _ in range(2):
        start = time.perf_counter()
        score_requests(model, tok, single, backend.context_length, "cpu", lambda: False, max_rows=batch_size)
        times["engine"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for group in groups:
            _last_position_logprobs(model, [r[0] for r in group], pad, "cpu")
        times["bare"].append(time.perf_counter() - start)
    backend.unload()
    del torch
    return {"engine_s": min(times["engine"]), "bare_s": min(times["bare"]), "questions": len(single)}


# ------------------------------------------------------------------ comparison


def compare(engine: dict[str, Any], lmeval: dict[str, Any], keys: list[str]) -> list[tuple[str, int, int, float]]:
    rows = []
    for key in keys:
        items, docs = engine["tasks"][key], lmeval["tasks"][key]
        if len(items) != len(docs):
            raise SystemExit(f"{key}: the sides scored {len(items)} and {len(docs)} questions")
        same, worst = 0, 0.0
        for item, doc in zip(items, docs):
            ours = list(item["scores"].values())
            theirs = doc["lls"]
            same += max(range(len(ours)), key=ours.__getitem__) == max(range(len(theirs)), key=theirs.__getitem__)
            worst = max(worst, *(abs(a - b) for a, b in zip(ours, theirs)))
        rows.append((key, same, len(items), worst))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="multimedqa", help="tasks or groups (default multimedqa)")
    parser.add_argument("--long", action="store_true", help="MedQA-length prompts (~250 tokens)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size on both sides")
    parser.add_argument("--runs", type=int, default=1, help="runs per side, alternated (medians reported)")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (OMP_NUM_THREADS)")
    parser.add_argument("--bare-questions", type=int, default=96, help="questions for the bare-limit check")
    parser.add_argument("--lmeval-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lmeval_worker:
        lmeval_worker(args.model, args.tasks.split(","), args.datasets, args.batch_size, args.worker_out)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    from bench.tasks import load_catalog
    from perf.bench_vs_lmeval import demo_hf_dir

    keys = [t.key for t in load_catalog().expand(args.tasks) if t.reader != "usmle"]
    model = demo_hf_dir()
    with tempfile.TemporaryDirectory(prefix="suite-vs-lmeval-") as tmp:
        work = Path(tmp)
        home = work / "home"
        os.environ["MEDALPACA_DESKTOP_HOME"] = str(home)  # this process (the bare limit) and both sides' children
        from medalpaca_desktop.hub import datasets_dir

        datasets = datasets_dir()
        write_task_files(datasets, keys, args.long)
        engines, lmevals = [], []
        for run in range(args.runs):
            for side in (("engine", "lmeval") if run % 2 == 0 else ("lmeval", "engine")):
                if side == "engine":
                    engines.append(run_engine(model, keys, home, args.batch_size, work))
                    print(f"run {run + 1}: engine {engines[-1]['wall_s']:.1f} s", flush=True)
                else:
                    lmevals.append(run_lmeval(model, keys, datasets, args.batch_size, work))
                    print(f"run {run + 1}: lm-eval {lmevals[-1]['wall_s']:.1f} s", flush=True)
        report(engines, lmevals, keys, args)
        bare = bare_limit(model, keys, home, args.batch_size, args.bare_questions)
    print(f"| scoring loop vs bare model() on the same batches, s ({bare['questions']} questions) | "
          f"{bare['engine_s']:.2f} | bare {bare['bare_s']:.2f} | {bare['bare_s'] / bare['engine_s']:.2f}x | >= 0.9x |")
    return 0


def report(engines: list[dict[str, Any]], lmevals: list[dict[str, Any]], keys: list[str], args: Any) -> None:
    agreement = compare(engines[0], lmevals[0], keys)
    n = sum(r[2] for r in agreement)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"\ntasks {len(keys)}, {n} questions, batch size {args.batch_size}, "
          f"{'long' if args.long else 'sample-length'} prompts, runs {args.runs}, torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', os.cpu_count())}, lm-eval {lmevals[0]['version']}\n")
    print("| task | predictions equal | largest log-likelihood difference |\n|---|---|---|")
    for key, same, total, worst in agreement:
        print(f"| {key} | {same}/{total} | {worst:.1e} |")
    qps_e, qps_l = n / med(engines, "scoring_s"), n / med(lmevals, "scoring_s")
    print("\n| measure | engine | lm-eval | ratio | target |\n|---|---|---|---|---|")
    print(f"| questions/s while scoring | {qps_e:.2f} | {qps_l:.2f} | {qps_e / qps_l:.2f}x | - |")
    print(f"| whole process, s | {med(engines, 'wall_s'):.1f} | {med(lmevals, 'wall_s'):.1f} | "
          f"{med(lmevals, 'wall_s') / med(engines, 'wall_s'):.2f}x | >= 1.2x |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
