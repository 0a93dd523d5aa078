"""The SLURM batch script the wizard exports: valid bash, the right accelerate launch, GUI-importable."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from trainer.config import TrainConfig
from trainer.slurm import SlurmOptions, slurm_script


def _config(**extra) -> TrainConfig:
    base = dict(base_model="/models/llama-7b", data=["/data/medical.jsonl"], output_dir="/runs/my run")
    return TrainConfig(**{**base, **extra})


def _srun_line(script: str) -> str:
    return next(line for line in script.splitlines() if line.startswith("srun "))


def test_single_gpu_lora_script():
    script = slurm_script("/runs/my run/config.yaml", _config())
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --nodes=1" in script
    assert "#SBATCH --output=/runs/my run/slurm-%j.out" in script
    assert "export CONFIG='/runs/my run/config.yaml'" in script
    line = _srun_line(script)
    assert "-m accelerate.commands.launch --num_processes 1 --num_machines 1" in line
    assert "--multi_gpu" not in line and "--use_fsdp" not in line
    assert line.endswith('-m trainer run "$CONFIG"\'')
    assert "de-quantize" not in script


def test_multi_node_full_fine_tune_uses_fsdp_and_counts_all_processes():
    opts = SlurmOptions(nodes=2, gpus_per_node=4, time_limit="2-00:00:00", partition="gpu", account="lab")
    script = slurm_script("/runs/x/config.yaml", _config(method="full", num_processes=4), opts)
    for line in ("#SBATCH --nodes=2", "#SBATCH --gres=gpu:4", "#SBATCH --time=2-00:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --cpus-per-task=32"):
        assert line in script
    srun = _srun_line(script)
    assert "--num_processes 8 --num_machines 2" in srun
    assert "--use_fsdp" in srun and "--fsdp_sharding_strategy FULL_SHARD" in srun and "--multi_gpu" not in srun
    assert '--machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST" --main_process_port 29500' in srun


def test_adapter_method_on_several_gpus_uses_ddp():
    srun = _srun_line(slurm_script("/c.yaml", _config(method="qlora"), SlurmOptions(gpus_per_node=2)))
    assert "--multi_gpu" in srun and "--use_fsdp" not in srun and "--num_processes 2" in srun


def test_gguf_base_is_dequantized_once_before_the_launch():
    script = slurm_script("/c.yaml", _config(base_model="/models/demo.Q4_1.gguf"))
    lines = script.splitlines()
    dequant = next(i for i, line in enumerate(lines) if "resolve_base_model" in line)
    assert dequant < lines.index(_srun_line(script))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("method", ["lora", "full"])
def test_script_is_valid_bash_and_the_launch_line_runs_the_trainer(tmp_path, method):
    """bash -n checks the syntax; a fake srun/scontrol shows what each node would execute."""
    config = _config(method=method, base_model="/models/demo.gguf", output_dir=str(tmp_path / "runs" / "a b"))
    script = tmp_path / "job.sbatch"
    script.write_text(slurm_script(tmp_path / "my config.yaml", config, SlurmOptions(nodes=2, gpus_per_node=2)))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node-a; echo node-b\n")
    # srun runs its command once, as node 1; "python" prints its arguments one per line
    (bin_dir / "srun").write_text('#!/bin/bash\nshift\nSLURM_NODEID=1 "$@"\n')
    (bin_dir / "python").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "node-[a-b]"}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=30,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    launch = args[args.index("accelerate.commands.launch") - 1:]
    assert launch[-4:] == ["-m", "trainer", "run", str(tmp_path / "my config.yaml")]
    assert launch[launch.index("--machine_rank") + 1] == "1"
    assert launch[launch.index("--main_process_ip") + 1] == "node-a"
    assert launch[launch.index("--num_processes") + 1] == "4"


def test_fsdp_options_match_the_local_launcher():
    from trainer.launch import fsdp_arguments
    from trainer.slurm import FSDP_ARGUMENTS

    assert list(FSDP_ARGUMENTS) == fsdp_arguments(None)


def test_importing_it_loads_no_ml_library():
    code = ("import sys, trainer.slurm, trainer.preview; "
            "print([m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
