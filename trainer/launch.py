"""Several processes (GPUs, or machines) through `accelerate launch`.

Why re-exec instead of spawning ourselves: accelerate sets up the rendezvous, the
environment (RANK, WORLD_SIZE, LOCAL_RANK) and the backend (NCCL on GPUs, gloo on a
CPU-only machine) exactly as a cluster script would, so one config runs unchanged on
one GPU, several, or several machines. The children run `python -m trainer run`.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LaunchOptions:
    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None


def is_launched_child() -> bool:
    """True inside a process that accelerate/torchrun started (never re-launch from there)."""
    import os

    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(config_path: str | Path, overrides: list[str], resume: bool, opts: LaunchOptions) -> list[str]:
    """The `accelerate launch ... -m trainer run CONFIG` command line, as a list."""
    total = opts.num_processes * opts.num_machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(total), "--num_machines", str(opts.num_machines),
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if total > 1:
        cmd.append("--multi_gpu")  # DDP; on a CPU-only machine accelerate uses gloo processes
    if opts.num_machines > 1:
        cmd += ["--machine_rank", str(opts.machine_rank)]
        if opts.main_process_ip:
            cmd += ["--main_process_ip", opts.main_process_ip]
    port = opts.main_process_port or (_free_port() if opts.num_machines == 1 else 29500)
    cmd += ["--main_process_port", str(port), "-m", "trainer", "run", str(config_path)]
    for item in overrides:
        cmd += ["--set", item]
    if resume:
        cmd.append("--resume")
    return cmd


def launch(config_path: str | Path, overrides: list[str], resume: bool, opts: LaunchOptions) -> int:
    """Run the job in `num_processes` processes; their rank 0 writes the events to our stdout."""
    import subprocess

    cmd = launch_command(config_path, overrides, resume, opts)
    print("launching: " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # forward the stop; the children checkpoint and leave
        import signal

        proc.send_signal(signal.SIGINT)
        return proc.wait()
