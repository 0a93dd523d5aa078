"""A SLURM batch script that runs a saved config on a cluster, through accelerate (the wizard's export).

The same config file the desktop runs: one `srun` task per node, each starting
`accelerate launch` with that node's GPUs (`--num_processes` counts all of the job's
processes, `--machine_rank` is the node's rank, the first node hosts the rendezvous), and
accelerate runs `python -m trainer run CONFIG` in every process. The strategy follows
trainer.launch: FSDP (full_shard, one unit per decoder layer) for a full fine-tune on more
than one GPU, DDP for the adapter methods. A GGUF base is de-quantized once, before the
launch, into the shared app cache (every process would race to do it otherwise).

GUI-importable: text only, no torch. trainer.launch imports transformers inside a function,
which the GUI's import contract counts, so the FSDP options are repeated here (a test keeps
them equal to `trainer.launch.fsdp_arguments(None)`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from trainer.config import TrainConfig

DEFAULT_PORT = 29500
# accelerate's FSDP (v1) options for a full fine-tune (trainer.launch.fsdp_arguments without a layer class:
# accelerate then wraps the model's _no_split_modules, its decoder layer).
FSDP_ARGUMENTS = ("--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
                  "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_backward_prefetch", "BACKWARD_PRE",
                  "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_use_orig_params", "true",
                  "--fsdp_sync_module_states", "true", "--fsdp_offload_params", "false")


@dataclass
class SlurmOptions:
    """What the batch header asks of the scheduler."""

    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_gpu: int = 8
    time_limit: str = "24:00:00"
    partition: str = ""
    account: str = ""
    job_name: str = ""
    python: str = "python"  # the cluster's interpreter with medalpaca-desktop installed
    port: int = DEFAULT_PORT


def job_name_for(config: TrainConfig) -> str:
    stem = Path(config.base_model).stem or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"medalpaca-{config.method}-{stem}")[:60]


def accelerate_arguments(config: TrainConfig, opts: SlurmOptions) -> list[str]:
    """accelerate launch options (without the machine rank and address, which come from SLURM)."""
    total = opts.nodes * opts.gpus_per_node
    args = ["--num_processes", str(total), "--num_machines", str(opts.nodes),
            "--mixed_precision", "no", "--dynamo_backend", "no"]
    if total > 1 and config.method == "full":
        args += FSDP_ARGUMENTS
    elif total > 1:
        args.append("--multi_gpu")
    return args


def slurm_script(config_path: str | Path, config: TrainConfig, opts: SlurmOptions | None = None) -> str:
    """The sbatch script text for `config` saved at `config_path` (an absolute path is best)."""
    opts = opts or SlurmOptions(gpus_per_node=max(1, config.num_processes))
    cfg = str(config_path)
    name = opts.job_name or job_name_for(config)
    out_dir = config.output_dir or str(Path(cfg).parent)
    header = [
        "#!/bin/bash",
        f"# MedAlpaca Desktop fine-tune: {config.method} of {config.base_model}",
        f"# Config: {cfg} (the same file the desktop app runs). Submit with: sbatch {shlex.quote(name)}.sbatch",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={opts.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gres=gpu:{opts.gpus_per_node}",
        f"#SBATCH --cpus-per-task={opts.cpus_per_gpu * opts.gpus_per_node}",
        f"#SBATCH --time={opts.time_limit}",
        f"#SBATCH --output={out_dir}/slurm-%j.out",
    ]
    if opts.partition:
        header.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        header.append(f"#SBATCH --account={opts.account}")
    body = [
        "",
        "set -euo pipefail",
        "export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false",
        f"export PYTHON={shlex.quote(opts.python)}",
        f"export CONFIG={shlex.quote(cfg)}",
        'export MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"mkdir -p {shlex.quote(out_dir)}",
    ]
    if Path(config.base_model).suffix.lower() == ".gguf":
        body += [
            "",
            "# The base model is a GGUF file: de-quantize it once into the app cache before the processes start.",
            '"$PYTHON" -c "import sys; from trainer.config import TrainConfig; '
            'from trainer.model_files import resolve_base_model; '
            'resolve_base_model(TrainConfig.load(sys.argv[1]), lambda e: None)" "$CONFIG"',
        ]
    launch = ['"$PYTHON"', "-m", "accelerate.commands.launch", *accelerate_arguments(config, opts)]
    body += [
        "",
        f"# {opts.nodes} node(s) x {opts.gpus_per_node} GPU(s); {'FSDP' if config.method == 'full' else 'DDP'} "
        "when more than one process. Resume a stopped job: add --resume after $CONFIG.",
        "srun --kill-on-bad-exit=1 bash -c '" + " ".join(launch)
        + ' --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST"'
        + f' --main_process_port {opts.port} -m trainer run "$CONFIG"' + "'",
        "",
    ]
    return "\n".join(header + body)
