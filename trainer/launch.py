"""Several processes (GPUs, or machines) through `accelerate launch`.

Why re-exec instead of spawning ourselves: accelerate sets up the rendezvous, the
environment (RANK, WORLD_SIZE, LOCAL_RANK) and the backend (NCCL on GPUs, gloo on a
CPU-only machine) exactly as a cluster script would, so one config runs unchanged on
one GPU, several, or several machines. The children run `python -m trainer run`.

FSDP. A full fine-tune on several GPUs shards parameters, gradients and optimizer state
(`full_shard`, each decoder layer its own FSDP unit: the MedAlpaca repository's
`--fsdp "full_shard auto_wrap"` with `--fsdp_transformer_layer_cls_to_wrap LlamaDecoderLayer`);
adapter methods keep plain DDP (the frozen base is small next to optimizer state, and FSDP
with mostly frozen parameters gains little). FSDP needs GPUs (NCCL), so a CPU-only machine
always gets DDP over gloo. accelerate refuses `--multi_gpu` together with `--use_fsdp`.
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


def fsdp_arguments(layer_cls: str | None) -> list[str]:
    """accelerate's FSDP (v1) options for a full fine-tune: full_shard, one unit per decoder layer.

    Without a layer class accelerate wraps the model's `_no_split_modules` (the decoder layer).
    The full state dict is gathered for saving, so checkpoints stay ordinary HF folders.
    """
    args = ["--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
            "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"]
    if layer_cls:
        args += ["--fsdp_transformer_layer_cls_to_wrap", layer_cls]
    args += ["--fsdp_backward_prefetch", "BACKWARD_PRE", "--fsdp_state_dict_type", "FULL_STATE_DICT",
             "--fsdp_use_orig_params", "true", "--fsdp_sync_module_states", "true",
             "--fsdp_offload_params", "false"]
    return args


def decoder_layer_class(model_dir: str | Path) -> str | None:
    """The decoder layer class name of an HF model folder (e.g. LlamaDecoderLayer), or None."""
    import json

    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        import transformers

        for arch in cfg.get("architectures") or []:
            modules = getattr(getattr(transformers, arch, None), "_no_split_modules", None)
            if modules:
                return str(list(modules)[0])
    except (OSError, ValueError, ImportError):
        return None
    return None


def launch_command(config_path: str | Path, overrides: list[str], resume: bool, opts: LaunchOptions, *,
                   method: str | None = None, has_gpu: bool = False, layer_cls: str | None = None) -> list[str]:
    """The `accelerate launch ... -m trainer run CONFIG` command line, as a list.

    `method` and `has_gpu` pick the strategy: FSDP for `method == "full"` on GPUs with more than
    one process in all, DDP otherwise (NCCL on GPUs; gloo processes on a CPU-only machine, where
    FSDP cannot run). `layer_cls` names the decoder layer FSDP wraps.
    """
    total = opts.num_processes * opts.num_machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(total), "--num_machines", str(opts.num_machines),
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if total > 1 and method == "full" and has_gpu:
        cmd += fsdp_arguments(layer_cls)  # instead of --multi_gpu (accelerate allows only one)
    elif total > 1:
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


def _strategy_facts(config_path: str | Path, overrides: list[str]) -> tuple[str, bool, str | None]:
    """(method, this machine has a GPU, decoder layer class) for `launch_command`."""
    import torch

    from trainer.config import TrainConfig

    config = TrainConfig.load(config_path, overrides)
    has_gpu = torch.cuda.is_available()
    layer_cls = None
    if config.method == "full" and has_gpu:
        from medalpaca_desktop.core.events import EventWriter
        from trainer.run import resolve_base_model

        # a GGUF base is already de-quantized into the cache by the caller; this only finds the folder
        layer_cls = decoder_layer_class(resolve_base_model(config, EventWriter(None).emit))
    return config.method, has_gpu, layer_cls


def launch(config_path: str | Path, overrides: list[str], resume: bool, opts: LaunchOptions) -> int:
    """Run the job in `num_processes` processes; their rank 0 writes the events to our stdout.

    Rank 0 records our pid in the run's row (core.worker.JOB_PID_ENV): we are the process the
    GUI started and stops.
    """
    import os
    import subprocess

    from medalpaca_desktop.core.worker import JOB_PID_ENV

    method, has_gpu, layer_cls = _strategy_facts(config_path, overrides)
    cmd = launch_command(config_path, overrides, resume, opts, method=method, has_gpu=has_gpu, layer_cls=layer_cls)
    print("launching: " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd, env={**os.environ, JOB_PID_ENV: str(os.getpid())})
    try:
        return _exit_status(proc.wait())
    except KeyboardInterrupt:  # forward the stop; the children checkpoint and leave
        import signal

        proc.send_signal(signal.SIGINT)
        return _exit_status(proc.wait())


def _exit_status(returncode: int) -> int:
    """The launcher's status passed through; killed by a signal reads as a shell says it (128 + signal)."""
    return 128 - returncode if returncode < 0 else returncode
