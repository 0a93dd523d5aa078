"""The benchmark engine's generate mode against lm-evaluation-harness's generate_until, side by side.

    .venv/bin/python -m perf.generate_vs_lmeval [--runs 2] [--batch-size 8] [--max-new-tokens 128] [--limit N]

Same model, same questions, same prompt strings, greedy, the same token limit and stop strings on both sides:
- lm-eval: its HF backend (`HFLM.generate_until`) on the task perf/lmeval_tasks/medqa_sample_generate.yaml
  (medqa_4options' prompt "Question: ...\\nA. ...\\nAnswer:", the answer generated after it, until "\\n\\n" or
  "Question:") over the project's sample questions (resources/sample_questions/medqa_sample_lmeval.jsonl);
- the engine: `medalpaca bench --mode generate --prompt-style lm-eval --greedy --backend hf` on the same
  questions in MedQA form (medqa_sample.jsonl); its stop strings are bench.prompts.LMEVAL_STOP.
The model is the bundled demo (SmolLM2-135M-Instruct Q4_1 GGUF) de-quantized to fp32 HF.

Checked: lm-eval's rendered prompts equal the engine's (items.jsonl) and lm-eval's own
preprocess_medqa.doc_to_text, and lm-eval's stop strings and token limit are the engine's. Measured:
answer agreement (the text up to the stop, exactly and after stripping whitespace; target >= 98 %),
questions/s while generating (model loaded: the engine from its `Ready` event to its last item, lm-eval
the time inside `generate_until`; target >= 1.5x lm-eval), each side's whole-process time, and the
forward passes and row-steps each side computed (an lm-eval batch runs until its last row ends; the
engine's finished rows leave and the next questions take their slots). Each side runs in its own process,
runs alternate, medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.datasets import load_dataset
from perf.bench_vs_lmeval import MEDQA, ROOT, _lm_eval_doc_to_text, demo_hf_dir, run_engine

TASK_DIR = ROOT / "perf" / "lmeval_tasks"
TASKS = {"lm-eval": "medqa_sample_generate", "medalpaca": "medqa_sample_generate_medalpaca"}  # prompt style -> task


def engine_stop(style: str) -> list[str]:
    """The stop strings the engine's generate mode uses with this prompt style (bench.prompts)."""
    from bench.prompts import build_prompt

    return build_prompt(load_dataset(MEDQA, "medqa", limit=1).questions[0], "generate", style).stop


# ------------------------------------------------------------------ lm-eval side (own process)


def lmeval_worker(model: str, style: str, batch_size: int, max_new: int, limit: int | None, out: Path) -> None:
    """One lm-eval run; writes answers, prompts, generation arguments, batch shapes and timings as JSON."""
    t_process = time.perf_counter()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t_load = time.perf_counter()
    lm = HFLM(pretrained=model, dtype="float32", device="cpu", batch_size=batch_size)
    loaded = time.perf_counter()
    generating = {"seconds": 0.0}
    batches: list[dict[str, int]] = []
    original, original_generate = lm.generate_until, lm._model_generate

    def timed_generate_until(requests: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            generating["seconds"] += time.perf_counter() - start

    def counted_generate(context: Any, *args: Any, **kwargs: Any) -> Any:
        cont = original_generate(context, *args, **kwargs)
        batches.append({"rows": int(context.shape[0]), "width": int(context.shape[1]),
                        "real": int(kwargs["attention_mask"].sum()), "steps": int(cont.shape[1] - context.shape[1])})
        return cont

    lm.generate_until = timed_generate_until  # type: ignore[method-assign]
    lm._model_generate = counted_generate  # type: ignore[method-assign]
    manager = TaskManager(include_path=str(TASK_DIR))
    task = TASKS[style]
    t_eval = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit, log_samples=True,
                                      num_fewshot=0, gen_kwargs={"max_gen_toks": max_new})
    evaluated = time.perf_counter()
    reference = _lm_eval_doc_to_text() if style == "lm-eval" else None  # lm-eval's own medqa prompt function
    rows = []
    for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"]):
        context, gen_kwargs = sample["arguments"][0]
        rows.append({"doc_id": sample["doc_id"], "prompt": context, "gen_kwargs": gen_kwargs,
                     "reference_prompt": reference(sample["doc"]) if reference else context,
                     "output": sample["resps"][0][0]})
    out.write_text(json.dumps({
        "rows": rows, "batches": batches, "lm_eval_version": lm_eval.__version__,
        "load_s": loaded - t_load, "evaluate_s": evaluated - t_eval, "generate_s": generating["seconds"],
        "import_s": t_load - t_process,
    }))


def run_lmeval(model: Path, style: str, batch_size: int, max_new: int, limit: int | None,
               work: Path) -> dict[str, Any]:
    out = work / f"lmeval-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "perf.generate_vs_lmeval", "--lmeval-worker", "--model", str(model),
           "--prompt-style", style, "--batch-size", str(batch_size), "--max-new-tokens", str(max_new),
           "--worker-out", str(out)]
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
    data["qps"] = len(data["rows"]) / data["generate_s"]
    return data


def engine_run(model: Path, style: str, batch_size: int, max_new: int, limit: int | None,
               work: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    data = run_engine(model, "hf", batch_size, limit, work, mode="generate", style=style,
                      extra=("--greedy", "--max-new-tokens", str(max_new)))
    # Questions enter the slots longest prompt first (bench.scoring.longest_first) and items.jsonl holds them in
    # the order they ended; the slot schedule is replayed from each answer's token count.
    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = {str(item["id"]): len(tokenizer(item["prompt"])["input_ids"]) for item in data["items"]}
    position = {q.id: i for i, q in enumerate(load_dataset(MEDQA, "medqa").questions)}
    entering = sorted(data["items"], key=lambda item: (-lengths[str(item["id"])], position[str(item["id"])]))
    data.update(slot_schedule([int(item.get("tokens", 0)) for item in entering],
                              [lengths[str(item["id"])] for item in entering], batch_size))
    data["items"].sort(key=lambda item: position[str(item["id"])])  # dataset order, as lm-eval's doc_id
    return data


def slot_schedule(tokens: list[int], prompt_lengths: list[int], slots: int) -> dict[str, Any]:
    """What continuous batching (inference/hf_refill) computes for answers of these lengths, in entry order.

    A forward pass either lets waiting prompts enter the free slots (one left-padded prefill that gives each its
    first token) or steps every running row by one token. Returns the passes, the row-steps (decode positions
    computed) and the share of prefill positions that are padding.
    """
    waiting, running = list(range(len(tokens))), list[int]()
    left = [max(1, t) for t in tokens]
    passes = row_steps = real = padded = 0
    while waiting or running:
        passes += 1
        if len(running) < slots and waiting:
            group, waiting = waiting[:slots - len(running)], waiting[slots - len(running):]
            real += sum(prompt_lengths[i] for i in group)
            padded += len(group) * max(prompt_lengths[i] for i in group)
            running += group
            moved = group
        else:
            moved = running
            row_steps += len(running)
        for i in moved:
            left[i] -= 1
        running = [i for i in running if left[i] > 0]
    return {"passes": passes, "row_steps": row_steps, "padding": 1 - real / max(1, padded)}


# ------------------------------------------------------------------ comparison


def compare(engine: dict[str, Any], lmeval: dict[str, Any], style: str, max_new: int) -> dict[str, Any]:
    """Answer agreement and the prompt and argument checks of one run of each side."""
    stop = engine_stop(style)
    items, rows = engine["items"], lmeval["rows"]
    if len(items) != len(rows):
        raise SystemExit(f"the sides answered different numbers of questions ({len(items)} and {len(rows)})")
    exact = stripped = prompts = template = args_ok = 0
    differ = []
    for item, row in zip(items, rows):  # both in dataset order
        exact += item["output"] == row["output"]
        same = item["output"].strip() == row["output"].strip()
        stripped += same
        if not same:
            differ.append({"id": item["id"], "engine": item["output"], "lm_eval": row["output"]})
        prompts += item["prompt"] == row["prompt"]
        template += row["prompt"] == row["reference_prompt"]
        until = row["gen_kwargs"].get("until", [])  # lm-eval adds the EOS token's text (the engine stops at EOS)
        args_ok += (until[:len(stop)] == stop and len(until) <= len(stop) + 1
                    and int(row["gen_kwargs"].get("max_gen_toks", -1)) == max_new
                    and row["gen_kwargs"].get("do_sample") is False)
    return {"n": len(items), "exact": exact, "stripped": stripped, "prompts_equal": prompts,
            "template_equal": template, "args_equal": args_ok, "differ": differ,
            "engine_tokens": sum(int(i.get("tokens", 0)) for i in items),
            "stop_reasons": {r: sum(i.get("stop_reason") == r for i in items)
                             for r in sorted({str(i.get("stop_reason")) for i in items})}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per side, alternated (medians reported)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size on both sides")
    parser.add_argument("--prompt-style", choices=sorted(TASKS), default="lm-eval", help="lm-eval: medqa_4options' "
                        "prompt (the demo model ends its answer at once: the prompt evaluation is measured); "
                        "medalpaca: the paper's template (long answers: the decoding is measured)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="token limit of an answer on both sides "
                        "(the engine's default, the MedAlpaca paper's)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all 72)")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (OMP_NUM_THREADS); 1 is steadier "
                        "on a machine shared with other work")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--lmeval-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit = args.limit or None
    if args.lmeval_worker:
        lmeval_worker(args.model, args.prompt_style, args.batch_size, args.max_new_tokens, limit, args.worker_out)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # inherited by both sides' processes; torch reads it at start-up
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    model = demo_hf_dir()
    engines: list[dict[str, Any]] = []
    lmevals: list[dict[str, Any]] = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="generate-vs-lmeval-") as tmp:
        work = Path(tmp)
        for run in range(args.runs):
            for side in (("engine", "lmeval") if run % 2 == 0 else ("lmeval", "engine")):
                if side == "engine":
                    engines.append(engine_run(model, args.prompt_style, args.batch_size, args.max_new_tokens, limit,
                                              work))
                    print(f"run {run + 1}: engine  {engines[-1]['qps']:.2f} questions/s, "
                          f"{engines[-1]['wall_s']:.1f} s", flush=True)
                else:
                    lmevals.append(run_lmeval(model, args.prompt_style, args.batch_size, args.max_new_tokens, limit,
                                              work))
                    print(f"run {run + 1}: lm-eval {lmevals[-1]['qps']:.2f} questions/s, "
                          f"{lmevals[-1]['wall_s']:.1f} s", flush=True)
                loads.append(os.getloadavg()[0])
    agree = compare(engines[0], lmevals[0], args.prompt_style, args.max_new_tokens)
    n = agree["n"]

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    ratios = [e["qps"] / m["qps"] for e, m in zip(engines, lmevals)]
    lm_steps = sum(b["steps"] for b in lmevals[0]["batches"])
    lm_row_steps = sum(b["steps"] * b["rows"] for b in lmevals[0]["batches"])
    lm_pad = 1 - sum(b["real"] for b in lmevals[0]["batches"]) / sum(b["rows"] * b["width"]
                                                                     for b in lmevals[0]["batches"])
    rows = [
        ("answers equal, exact (text up to the stop)", f"{agree['exact']}/{n}", f"{100 * agree['exact'] / n:.1f} %",
         ">= 98 %"),
        ("answers equal, whitespace stripped", f"{agree['stripped']}/{n}", f"{100 * agree['stripped'] / n:.1f} %",
         ">= 98 %"),
        ("prompts equal (engine items = lm-eval rendered / lm-eval's own doc_to_text)",
         f"{agree['prompts_equal']}/{n} / {agree['template_equal']}/{n}", "", "all"),
        ("lm-eval's until, max_gen_toks, do_sample = the engine's", f"{agree['args_equal']}/{n}", "", "all"),
        ("questions/s while generating (engine / lm-eval, medians)", f"{med(engines, 'qps'):.2f} / "
         f"{med(lmevals, 'qps'):.2f}", f"{med(engines, 'qps') / med(lmevals, 'qps'):.2f}x", ">= 1.5x"),
        ("runs, questions/s (engine; lm-eval)", ", ".join(f"{r['qps']:.2f}" for r in engines) + "; " +
         ", ".join(f"{r['qps']:.2f}" for r in lmevals), "", "-"),
        ("per-run ratios (median)", ", ".join(f"{r:.2f}" for r in ratios), f"{statistics.median(ratios):.2f}x",
         ">= 1.5x"),
        ("whole process, s (engine / lm-eval, medians)", f"{med(engines, 'wall_s'):.1f} / {med(lmevals, 'wall_s'):.1f}",
         f"{med(lmevals, 'wall_s') / med(engines, 'wall_s'):.2f}x", "-"),
        ("forward passes after the prompts (engine: prefills of entering rows + decode steps / lm-eval: decode "
         "steps)", f"{engines[0]['passes']} / {lm_steps}", f"{lm_steps / max(1, engines[0]['passes']):.2f}x", "-"),
        ("row-steps computed while decoding (engine / lm-eval)", f"{engines[0]['row_steps']} / {lm_row_steps}",
         f"{lm_row_steps / max(1, engines[0]['row_steps']):.2f}x", "-"),
        ("engine answer tokens (sum); stop reasons", str(agree["engine_tokens"]),
         ", ".join(f"{k} {v}" for k, v in agree["stop_reasons"].items()), "-"),
        ("prompt padding, share of the prefill positions (engine / lm-eval)",
         f"{100 * engines[0]['padding']:.1f} % / {100 * lm_pad:.1f} %", "", "-"),
    ]
    threads = os.environ.get("OMP_NUM_THREADS", os.cpu_count())
    print(f"\nmodel {model} (fp32), {n} questions, prompt style {args.prompt_style}, batch size {args.batch_size}, "
          f"max new tokens {args.max_new_tokens}, runs {args.runs}, torch threads {threads}, "
          f"lm-eval {lmevals[0]['lm_eval_version']}, 1-min load average during the runs "
          f"{min(loads):.1f}-{max(loads):.1f}\n")
    print("| measure | value | ratio | target |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for d in agree["differ"][:5]:
        print(f"differs, question {d['id']}: engine {d['engine']!r} / lm-eval {d['lm_eval']!r}")
    if args.json:
        engine_keys = ("qps", "wall_s", "scoring_s", "passes", "row_steps", "padding")
        args.json.write_text(json.dumps({"rows": rows, "agreement": agree, "engine_runs": [
            {k: r[k] for k in engine_keys} for r in engines], "lmeval_runs": [
            {k: r[k] for k in ("qps", "wall_s", "generate_s", "evaluate_s", "batches")} for r in lmevals]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
