"""Scoring one benchmark in several processes: `--num-processes N` through `accelerate launch`.

Why accelerate: it starts the N processes with RANK / WORLD_SIZE / LOCAL_RANK set, one per
GPU (or N CPU processes that split the cores), on one machine or a cluster node, exactly as
the trainer's launcher does. The processes never talk to each other: rank r scores every
N-th of the remaining questions (r, r + N, ...) and appends them to its own
`items.rank<r>.jsonl`, then leaves a `.rank<r>.done` file; rank 0 (the one whose events the
GUI reads) waits for the others, merges their items into items.jsonl and the database, and
writes the summary. A stop or a crash loses nothing: a resumed run reads items.jsonl and
every rank's file, so a question scored by any rank is never scored again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: How long rank 0 waits for the other ranks after its own share (they score as many questions).
WAIT_FOR_RANKS_S = 6 * 3600
#: After a stop, how long rank 0 waits for the others to write their last question.
WAIT_AFTER_STOP_S = 60


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: list) -> list:
        """This rank's share of the remaining questions: every `world`-th, from `rank`."""
        return items[self.rank::self.world]


def current_shard() -> Shard | None:
    """This process's shard when accelerate started several; None for an ordinary run."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return None
    return Shard(rank, world, local) if world > 1 and "LOCAL_RANK" in os.environ else None


def rank_items(run_dir: Path, rank: int) -> Path:
    return run_dir / f"items.rank{rank}.jsonl"


def rank_files(run_dir: Path) -> list[Path]:
    """Every rank's items file left in the run folder (this session's or an interrupted one's)."""
    return sorted(run_dir.glob("items.rank*.jsonl"))


def done_marker(run_dir: Path, rank: int) -> Path:
    return run_dir / f".rank{rank}.done"


def launch_token() -> str:
    """What the ranks of one launch share (and an earlier launch's leftover marker does not)."""
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}:{os.getppid()}"


def mark_done(run_dir: Path, rank: int) -> None:
    done_marker(run_dir, rank).write_text(launch_token(), encoding="utf-8")


def _marked(run_dir: Path, rank: int) -> bool:
    try:
        return done_marker(run_dir, rank).read_text(encoding="utf-8") == launch_token()
    except OSError:
        return False


def clear_markers(run_dir: Path) -> None:
    for path in run_dir.glob(".rank*.done"):
        path.unlink(missing_ok=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ranks(run_dir: Path, world: int, stopped: object, poll_s: float = 0.2) -> list[int]:
    """Wait until ranks 1..world-1 marked themselves done; returns the ranks that never did.

    `stopped`: a threading.Event; once set, the wait is cut to WAIT_AFTER_STOP_S.
    """
    start = time.monotonic()
    stop_seen: float | None = None
    missing = list(range(1, world))
    while missing:
        missing = [r for r in missing if not _marked(run_dir, r)]
        if not missing:
            break
        now = time.monotonic()
        if getattr(stopped, "is_set", lambda: False)():
            stop_seen = stop_seen or now
            if now - stop_seen > WAIT_AFTER_STOP_S:
                break
        if now - start > WAIT_FOR_RANKS_S:
            break
        time.sleep(poll_s)
    return missing


def cpu_threads(world: int) -> int:
    """Torch / llama.cpp threads per rank on a CPU: the cores split between the ranks."""
    return max(1, (os.cpu_count() or 1) // max(1, world))


def launch_command(config_path: str | Path, num_processes: int, resume: bool, has_gpu: bool) -> list[str]:
    """`accelerate launch --num_processes N ... -m bench run CONFIG [--resume]`."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        cmd.append("--multi_gpu")  # one process per GPU; without a GPU accelerate starts gloo CPU processes
    cmd += ["--main_process_port", str(free_port()), "-m", "bench", "run", str(config_path)]
    if resume:
        cmd.append("--resume")
    return cmd


def run_launched(config: Any, run_dir: Path, *, resume: bool, stop: Any = None,
                 stdout: int | IO[Any] | None = None) -> int:
    """Run `config` (num_processes > 1) through accelerate and wait; the exit status, 128 + signal when killed.

    This process is the one a GUI follows and stops: its pid goes to the run's row (JOB_PID_ENV). A stop
    (`stop` set, or Ctrl+C here) is passed on as SIGINT: every rank finishes its question and leaves.
    `stdout`: where rank 0's events go (default: ours).
    """
    import signal
    import subprocess

    from medalpaca_desktop.core.worker import JOB_PID_ENV

    config_path = run_dir / "config.yaml"
    config.save(config_path)
    try:
        import torch

        has_gpu = bool(torch.cuda.is_available())
    except ImportError:
        has_gpu = False
    cmd = launch_command(config_path, int(config.num_processes),
                         resume or (run_dir / "items.jsonl").is_file(), has_gpu)
    print("launching: " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd, env={**os.environ, JOB_PID_ENV: str(os.getpid())}, stdout=stdout)
    asked = False
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if not asked and getattr(stop, "is_set", lambda: False)():
                    proc.send_signal(signal.SIGINT)
                    asked = True
    except KeyboardInterrupt:  # Ctrl+C in a terminal: the same stop
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    return 128 - code if code < 0 else code
