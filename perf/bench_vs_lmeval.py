"""The benchmark engine's log-likelihood mode against lm-evaluation-harness, side by side.

    .venv/bin/python -m perf.bench_vs_lmeval [--runs 2] [--batch-size 8] [--limit N] [--no-gguf]

Same model, same questions, same prompt on both sides:
- lm-eval: its HF backend (`HFLM`) on the task perf/lmeval_tasks/medqa_sample.yaml, which is lm-eval's
  medqa_4options (prompt "Question: ...\\nA. ...\\nAnswer:", continuations " A".." D", acc and acc_norm)
  over the project's own sample questions (resources/sample_questions/medqa_sample_lmeval.jsonl);
- the engine: `medalpaca bench --mode loglikelihood --prompt-style lm-eval --backend hf` on the same
  questions in MedQA form (medqa_sample.jsonl);
- also `--backend llamacpp` on the GGUF the HF copy was de-quantized from (questions/s only; its
  predictions are shown, not held to the target, as Q4_1 kernels are not the fp32 model).
The model is the bundled demo (SmolLM2-135M-Instruct Q4_1 GGUF) de-quantized to an fp32 HF folder by
trainer/gguf_import.py, as the tests' `demo_hf_dir` fixture builds it.

Measured: prediction agreement per question (acc and acc_norm argmax; target >= 99 %), the largest
difference of a log-likelihood, the prompts (lm-eval's own doc_to_text vs the task template vs the
engine's items.jsonl), and questions/s while scoring (model loaded; target >= 2x lm-eval), plus each
side's whole-process time. Each side runs in its own process, runs alternate, medians are reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASK_DIR = ROOT / "perf" / "lmeval_tasks"
TASK = "medqa_sample_4options"
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"
LMEVAL_DATA = ROOT / "resources" / "sample_questions" / "medqa_sample_lmeval.jsonl"
LETTERS = "ABCD"


def demo_hf_dir() -> Path:
    """The demo GGUF de-quantized to fp32 HF (cached, as perf/chat_overhead.py does)."""
    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.demo_model import demo_model_path
    from trainer.gguf_import import dequantize_gguf_to_hf

    hf_dir = paths.cache_dir() / "perf-demo-hf"
    if not (hf_dir / "config.json").exists():
        dequantize_gguf_to_hf(demo_model_path(), hf_dir)
    return hf_dir


# ------------------------------------------------------------------ lm-eval side (own process)


def _lm_eval_doc_to_text() -> Any:
    """lm-eval's own medqa prompt function (lm_eval/tasks/medqa/preprocess_medqa.py), for the prompt check."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "medqa" / "preprocess_medqa.py"
    spec = importlib.util.spec_from_file_location("lm_eval_preprocess_medqa", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.doc_to_text


def lmeval_worker(model: str, batch_size: int, limit: int | None, out: Path) -> None:
    """One lm-eval run; writes predictions, log-likelihoods, prompts and timings as JSON."""
    t_process = time.perf_counter()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t_load = time.perf_counter()
    lm = HFLM(pretrained=model, dtype="float32", device="cpu", batch_size=batch_size)
    loaded = time.perf_counter()
    scoring = {"seconds": 0.0}
    original = lm.loglikelihood

    def timed_loglikelihood(requests: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            scoring["seconds"] += time.perf_counter() - start

    lm.loglikelihood = timed_loglikelihood  # type: ignore[method-assign]
    manager = TaskManager(include_path=str(TASK_DIR))
    t_eval = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, limit=limit,
                                      log_samples=True, num_fewshot=0)
    evaluated = time.perf_counter()
    reference = _lm_eval_doc_to_text()
    rows = []
    for sample in sorted(results["samples"][TASK], key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        doc = sample["doc"]
        rows.append({"doc_id": sample["doc_id"], "id": str(doc.get("id", sample["doc_id"])),
                     "scores": dict(zip(LETTERS, lls)), "pred": LETTERS[max(range(4), key=lls.__getitem__)],
                     "prompt": sample["arguments"][0][0] if "arguments" in sample else None,
                     "reference_prompt": reference(doc), "acc": sample.get("acc")})
    out.write_text(json.dumps({
        "rows": rows, "metrics": results["results"][TASK], "lm_eval_version": lm_eval.__version__,
        "load_s": loaded - t_load, "evaluate_s": evaluated - t_eval, "scoring_s": scoring["seconds"],
        "import_s": t_load - t_process, "batch_size": batch_size,
    }))


def run_lmeval(model: Path, batch_size: int, limit: int | None, work: Path) -> dict[str, Any]:
    out = work / f"lmeval-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "perf.bench_vs_lmeval", "--lmeval-worker", "--model", str(model),
           "--batch-size", str(batch_size), "--worker-out", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lm-eval run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["wall_s"] = wall
    n = len(data["rows"])
    data["qps"] = n / data["scoring_s"]
    data["qps_evaluate"] = n / data["evaluate_s"]
    return data


# ------------------------------------------------------------------ engine side (medalpaca bench)


def run_engine(model: Path, backend: str, batch_size: int, limit: int | None, work: Path,
               mode: str = "loglikelihood", style: str = "lm-eval", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `medalpaca bench` run on the sample questions; `extra`: more flags (generate mode's)."""
    out = work / f"bench-{backend}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "medalpaca_desktop", "bench", "--model", str(model), "--backend", backend,
           "--dataset", "medqa", "--data", str(MEDQA), "--mode", mode, "--prompt-style", style,
           "--batch-size", str(batch_size), "--out", str(out), *extra]
    if limit:
        cmd += ["--limit", str(limit)]
    env = dict(os.environ, MEDALPACA_DESKTOP_HOME=str(work / "home"), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"medalpaca bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    loaded = max(e["time"] for e in events if e["type"] == "progress" and e.get("stage") == "load")
    results = [e["time"] for e in events if e["type"] == "result" and e["data"].get("kind") == "item"]
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines() if line.strip()]
    items.sort(key=lambda it: int(it["id"]))  # scored longest prompt first; MedQA sample ids are positions
    summary = json.loads((out / "summary.json").read_text())
    return {"items": items, "summary": summary, "wall_s": wall, "scoring_s": max(results) - loaded,
            "qps": len(items) / (max(results) - loaded)}


# ------------------------------------------------------------------ comparison


@dataclass
class Agreement:
    n: int
    same_pred: int
    same_pred_norm: int
    max_ll_diff: float
    prompts_equal: int
    template_equal: int
    acc_engine: float
    acc_lmeval: float

    @property
    def share(self) -> float:
        return self.same_pred / self.n if self.n else 0.0


def agreement(engine: dict[str, Any], lmeval: dict[str, Any]) -> Agreement:
    items = engine["items"]
    rows = lmeval["rows"]
    if len(items) != len(rows):
        raise SystemExit(f"the sides scored different numbers of questions ({len(items)} and {len(rows)})")
    same = same_norm = prompts = template = 0
    max_diff = 0.0
    for item, row in zip(items, rows):  # both in file order (MedQA ids are positions)
        same += item["pred"] == row["pred"]
        same_norm += item.get("pred_norm") == row["pred"]  # choices are one letter: acc_norm == acc
        diffs = [abs(item["scores"][k] - row["scores"][k]) for k in LETTERS]
        max_diff = max(max_diff, *diffs)
        template += row["prompt"] == row["reference_prompt"]
        prompts += item["prompt"] == row["reference_prompt"]
    gold = [LETTERS[json.loads(line)["label"]] for line in LMEVAL_DATA.read_text().splitlines()[:len(rows)]]
    return Agreement(
        n=len(items), same_pred=same, same_pred_norm=same_norm, max_ll_diff=max_diff, prompts_equal=prompts,
        template_equal=template,
        acc_engine=sum(i["correct"] for i in items) / len(items),
        acc_lmeval=sum(r["pred"] == g for r, g in zip(rows, gold)) / len(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per side, alternated (medians reported)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size on both sides")
    parser.add_argument("--lmeval-batch-size", type=int, help="lm-eval's batch size if not --batch-size "
                        "(lm-eval's own default is 1)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all 72)")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (OMP_NUM_THREADS); 1 is steadier "
                        "on a machine shared with other work")
    parser.add_argument("--no-gguf", action="store_true", help="skip the llama.cpp (GGUF) run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--lmeval-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit = args.limit or None
    if args.lmeval_worker:
        lmeval_worker(args.model, args.batch_size, limit, args.worker_out)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # inherited by both sides' processes; torch reads it at start-up
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    from medalpaca_desktop.core.demo_model import demo_model_path

    model = demo_hf_dir()
    engine_runs: list[dict[str, Any]] = []
    lmeval_runs: list[dict[str, Any]] = []
    gguf_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-lmeval-") as tmp:
        work = Path(tmp)
        for run in range(args.runs):
            order = ("engine", "lmeval") if run % 2 == 0 else ("lmeval", "engine")
            for side in order:
                if side == "engine":
                    engine_runs.append(run_engine(model, "hf", args.batch_size, limit, work))
                    print(f"run {run + 1}: engine  {engine_runs[-1]['qps']:.2f} questions/s", flush=True)
                else:
                    lmeval_runs.append(run_lmeval(model, args.lmeval_batch_size or args.batch_size, limit, work))
                    print(f"run {run + 1}: lm-eval {lmeval_runs[-1]['qps']:.2f} questions/s", flush=True)
            if not args.no_gguf:
                gguf_runs.append(run_engine(demo_model_path(), "llamacpp", args.batch_size, limit, work))
                print(f"run {run + 1}: engine (GGUF) {gguf_runs[-1]['qps']:.2f} questions/s", flush=True)
    agree = agreement(engine_runs[0], lmeval_runs[0])

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    qps_engine, qps_lmeval = med(engine_runs, "qps"), med(lmeval_runs, "qps")
    rows = [
        ("prediction agreement, acc (engine vs lm-eval)", f"{agree.same_pred}/{agree.n}",
         f"{100 * agree.share:.1f} %", ">= 99 %"),
        ("prediction agreement, acc_norm", f"{agree.same_pred_norm}/{agree.n}",
         f"{100 * agree.same_pred_norm / agree.n:.1f} %", ">= 99 %"),
        ("largest log-likelihood difference", f"{agree.max_ll_diff:.2e}", "", "-"),
        ("prompts equal to lm-eval's doc_to_text (engine / task YAML)",
         f"{agree.prompts_equal}/{agree.n} / {agree.template_equal}/{agree.n}", "", "all"),
        ("accuracy (engine / lm-eval)", f"{agree.acc_engine:.3f} / {agree.acc_lmeval:.3f}", "", "equal"),
        ("questions/s while scoring (engine / lm-eval)", f"{qps_engine:.2f} / {qps_lmeval:.2f}",
         f"{qps_engine / qps_lmeval:.2f}x", ">= 2x"),
        ("runs, questions/s (engine; lm-eval)", ", ".join(f"{r['qps']:.2f}" for r in engine_runs) + "; " +
         ", ".join(f"{r['qps']:.2f}" for r in lmeval_runs), "", "-"),
        ("per-run ratios (engine / lm-eval of the same run; median)",
         ", ".join(f"{e['qps'] / m['qps']:.2f}" for e, m in zip(engine_runs, lmeval_runs)),
         f"{statistics.median(e['qps'] / m['qps'] for e, m in zip(engine_runs, lmeval_runs)):.2f}x", ">= 2x"),
        ("whole process, s (engine / lm-eval)", f"{med(engine_runs, 'wall_s'):.1f} / {med(lmeval_runs, 'wall_s'):.1f}",
         f"{med(lmeval_runs, 'wall_s') / med(engine_runs, 'wall_s'):.2f}x", "-"),
        ("lm-eval simple_evaluate, s (incl. task set-up)", f"{med(lmeval_runs, 'evaluate_s'):.1f}", "", "-"),
    ]
    if gguf_runs:
        gguf_agree = agreement(gguf_runs[0], lmeval_runs[0])
        rows += [
            ("GGUF (llama.cpp, Q4_1) questions/s while scoring", f"{med(gguf_runs, 'qps'):.2f}",
             f"{med(gguf_runs, 'qps') / qps_lmeval:.2f}x lm-eval", "-"),
            ("GGUF predictions equal to lm-eval's (fp32)", f"{gguf_agree.same_pred}/{gguf_agree.n}",
             f"{100 * gguf_agree.share:.1f} %", "(informational)"),
            ("GGUF whole process, s", f"{med(gguf_runs, 'wall_s'):.1f}", "", "-"),
        ]
    print(f"\nmodel {model} (fp32), {agree.n} questions, batch size {args.batch_size} (lm-eval "
          f"{args.lmeval_batch_size or args.batch_size}), runs {args.runs}, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', os.cpu_count())}, "
          f"lm-eval {lmeval_runs[0]['lm_eval_version']}\n")
    print("| measure | value | ratio | target |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "agreement": agree.__dict__}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
