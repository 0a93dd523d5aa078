"""The fine-tune wizard driven as a user would: every page, its refusals, Save config and Launch.

The data preview is the real `python -m trainer preview` subprocess on the tiny model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from helpers.ui_support import GPU_REPORT, NO_GPU_REPORT, isolate_user_home
from PySide6.QtCore import Qt

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.models import demo_model_info, inspect_model
from medalpaca_desktop.ui.finetune.page_data import sample_data_path
from medalpaca_desktop.ui.finetune.wizard import FinetuneWizard
from trainer.commands import user_command
from trainer.config import TrainConfig

PREVIEW_MS = 90_000
SAMPLE = str(Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "medical_instructions.jsonl")


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def wizard(qtbot):
    widget = FinetuneWizard()
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.shutdown()


@pytest.fixture
def tiny_model(tiny_llama_dir) -> ModelInfo:
    return inspect_model(tiny_llama_dir)


def _cpu() -> DeviceReport:
    return DeviceReport.from_dict(NO_GPU_REPORT)


def _gpu(memory: int | None = None, count: int = 1, bf16: bool = True) -> DeviceReport:
    report = DeviceReport.from_dict(GPU_REPORT)
    gpu = report.gpus[0]
    if memory is not None:
        gpu.memory_total = gpu.memory_free = memory
    gpu.bf16 = bf16
    report.gpus = [dataclasses.replace(gpu, index=i) for i in range(count)]
    return report


def _wait_preview(qtbot, wizard: FinetuneWizard) -> dict:
    qtbot.waitUntil(lambda: wizard.state.preview is not None and not wizard.data_page.is_checking(),
                    timeout=PREVIEW_MS)
    return wizard.state.preview


def _to_data_page(qtbot, wizard, model: ModelInfo) -> None:
    wizard.set_models([model])
    wizard.set_device_report(_cpu())
    assert wizard.model_page.select_path(model.path)
    assert wizard.go_next()
    assert wizard.current_page() is wizard.data_page


def test_walk_every_page_then_save_and_launch(qtbot, wizard, tiny_model, tmp_path):
    _to_data_page(qtbot, wizard, tiny_model)
    # defaults: the bundled sample data, checked by the real preview command with the tiny model's tokenizer
    assert wizard.data_page.source_texts() == [sample_data_path()]
    result = _wait_preview(qtbot, wizard)
    assert result["ok"] and result["records"] == 120
    html = wizard.data_page.rows_view.toHtml()
    assert "### Response:" in html and "masked, not learned" in html and "answer — learned" in html
    assert "medical_instructions.jsonl line 1" in html
    assert wizard.data_page.histogram.has_data() and wizard.data_page.histogram.isVisible()
    assert "120 records" in wizard.data_page.stats_label.text()
    assert "JSON Lines, 120 records" in wizard.data_page.status_label.text()
    assert wizard.data_page.errors_list.item(0).text() == "No problems found."

    assert wizard.go_next() and wizard.current_page() is wizard.method_page
    assert all(b.isEnabled() for b in wizard.method_page.buttons.values())  # a CPU runs every method, slowly
    assert "No CUDA GPU" in wizard.method_page.device_note.text()
    assert "runs on the CPU, slowly" in wizard.method_page.verdict_labels["lora"].text()
    assert wizard.method_page.selected_method() == "lora"

    assert wizard.go_next() and wizard.current_page() is wizard.settings_page
    assert wizard.settings_page.preset_combo.currentData() == "quick-cpu-trial"  # CPU-only: a short trial run
    assert wizard.settings_page.editors["max_steps"].editor.text() == "30"
    tooltip = wizard.settings_page.editors["learning_rate"].editor.toolTip()
    assert TrainConfig.field_help("learning_rate") in tooltip

    assert wizard.go_next() and wizard.current_page() is wizard.compute_page
    assert wizard.go_next() and wizard.current_page() is wizard.review_page
    assert not wizard.next_button.isEnabled()
    yaml_text = wizard.review_page.yaml_view.toPlainText()
    shown = yaml.safe_load(yaml_text)
    assert shown["base_model"] == str(tiny_llama_dir_of(tiny_model)) and shown["method"] == "lora"
    planned = Path(shown["output_dir"])
    assert planned.parent == paths.runs_dir() and planned.name.endswith("-lora")
    assert wizard.review_page.command_edit.text() == user_command(planned / "config.yaml")
    assert "free on that disk" in wizard.review_page.disk_label.text()

    saved = wizard.save_config(tmp_path / "saved.yaml")
    loaded = TrainConfig.load(saved)
    assert loaded.base_model == tiny_model.path and loaded.data == [SAMPLE] and loaded.max_steps == 30

    with qtbot.waitSignal(wizard.sig_launch_requested, timeout=5000) as blocker:
        wizard.launch_button.click()
    config_path = Path(blocker.args[0])
    assert config_path.name == "config.yaml" and config_path.parent.parent == paths.runs_dir()
    launched = TrainConfig.load(config_path)
    assert launched.output_dir == str(config_path.parent)
    assert dataclasses.replace(launched, output_dir="") == dataclasses.replace(loaded, output_dir="")


def tiny_llama_dir_of(model: ModelInfo) -> str:
    return model.path


def test_model_page_refuses_no_model_unsupported_and_adapters(qtbot, wizard, tmp_path):
    wizard.set_models([])
    assert wizard.model_page.empty_label.isVisible()
    assert not wizard.go_next()
    assert "No model to fine-tune yet" in wizard.model_page.problem_label.text()
    assert wizard.model_page.problem_label.isVisible()

    gpt2 = ModelInfo(path=str(tmp_path / "gpt2"), name="gpt2", kind="hf", weight_format="safetensors",
                     architecture="GPT2LMHeadModel", supported=False,
                     note="Architecture 'gpt2' is not one the app's engines handle "
                     "(LLaMA 1-3, Mistral, Qwen2/2.5/3, Gemma 2/3, Phi-3).")
    adapter = ModelInfo(path=str(tmp_path / "adapter"), name="my-adapter", kind="adapter")
    wizard.set_models([gpt2, adapter])
    assert wizard.model_page.tree.topLevelItemCount() == 1  # adapters are not bases
    assert wizard.model_page.selected_model() is None  # nothing fine-tunable to preselect
    assert not wizard.go_next()
    assert wizard.model_page.problem() == "Choose a base model to fine-tune."
    wizard.model_page.select_path(gpt2.path)
    assert "gpt2 cannot be fine-tuned here" in wizard.model_page.problem_label.text()  # shown at once
    assert not wizard.go_next() and wizard.current_index() == 0
    assert "not one the app's engines handle" in wizard.model_page.problem()
    assert wizard.model_page.tree.topLevelItem(0).text(5) == "no"

    assert not wizard.model_page.add_path(str(tmp_path / "missing"))
    assert wizard.model_page.problem()


def test_a_base_with_a_truncated_weights_file_is_refused_on_the_model_page(qtbot, wizard, tiny_llama_dir, tmp_path):
    import shutil

    cut = tmp_path / "cut-download"
    shutil.copytree(tiny_llama_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert wizard.model_page.add_path(str(cut))  # listed (its metadata is fine) ...
    wizard.model_page.select_path(str(cut))
    assert not wizard.go_next() and wizard.current_index() == 0  # ... but not taken as a base
    assert "is cut short" in wizard.model_page.problem() and "download or copy it again" in wizard.model_page.problem()


def test_demo_gguf_is_listed_as_dequantized_first_and_preselected(qtbot, wizard, tiny_model):
    demo = ModelInfo(path="/somewhere/SmolLM2-135M-Instruct.Q4_1.gguf", name="SmolLM2 (demo)", kind="gguf",
                     weight_format="gguf", architecture="llama", parameters=134_515_008, quantization="Q4_1",
                     size_bytes=98_000_000, source="demo",
                     extra={"block_count": 30, "embedding_length": 576, "vocab_size": 49152})
    wizard.set_models([tiny_model, demo])
    assert wizard.model_page.selected_model() is demo
    assert "de-quantized first" in wizard.model_page.tree.topLevelItem(1).text(1)
    assert "de-quantized to full precision" in wizard.model_page.details_label.text()


def test_data_page_lists_record_errors_with_file_and_line_and_refuses(qtbot, wizard, tiny_model, tmp_path):
    _to_data_page(qtbot, wizard, tiny_model)
    page = wizard.data_page
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "Define fever.", "input": "", "output": "A raised body temperature."})
    bad.write_text("\n".join([good, "{oops", json.dumps({"instruction": "no answer"})]) + "\n", encoding="utf-8")
    page.replace_sources([str(bad), str(tmp_path / "missing.csv")])
    result = _wait_preview(qtbot, wizard)
    assert result["error_total"] == 3
    shown = [page.errors_list.item(i).text() for i in range(page.errors_list.count())]
    assert any(t.startswith(f"{bad} line 2: not valid JSON") for t in shown)
    assert any(t.startswith(f"{bad} line 3: 'output' is missing") for t in shown)
    assert any("missing.csv: no such file" in t for t in shown)
    assert page.problem_label.isVisible() and "3 problems" in page.problem_label.text()
    assert not wizard.go_next() and wizard.current_page() is page
    assert "3 problems" in page.problem()

    page.replace_sources([])
    assert not wizard.go_next()
    assert page.problem().startswith("Add training data")


def test_csv_column_mapping(qtbot, wizard, tiny_model, tmp_path):
    _to_data_page(qtbot, wizard, tiny_model)
    page = wizard.data_page
    table = tmp_path / "qa.csv"
    table.write_text("question,context,answer\nWhat is a fever?,,A raised temperature.\n"
                     "Define anaemia.,blood,Too few red blood cells.\n", encoding="utf-8")
    page.replace_sources([str(table)])
    result = _wait_preview(qtbot, wizard)
    assert "no column 'instruction'" in result["errors"][0]["message"]
    assert not wizard.go_next()
    assert page.mapping_box.isVisible()
    combos = page.mapping_combos
    assert [combos["instruction"].itemText(i) for i in range(combos["instruction"].count())] == \
        ["question", "context", "answer"]
    for name, column in (("instruction", "question"), ("input", "context"), ("output", "answer")):
        combos[name].setCurrentText(column)
        combos[name].activated.emit(combos[name].currentIndex())
    mapped = f"{table}?instruction=question&input=context&output=answer"
    assert page.source_texts() == [mapped]
    result = _wait_preview(qtbot, wizard)
    assert result["ok"] and result["records"] == 2
    assert "What is a fever?" in page.rows_view.toPlainText()
    assert wizard.go_next() and wizard.state.config.data == [mapped]


def test_method_page_disables_what_the_gpu_cannot_hold(qtbot, wizard):
    demo = ModelInfo(path="/m/demo.gguf", name="demo", kind="gguf", weight_format="gguf", architecture="llama",
                     parameters=134_515_008, extra={"block_count": 30, "embedding_length": 576, "vocab_size": 49152})
    wizard.state.model = demo
    wizard.set_device_report(_gpu(memory=2_000_000_000))
    wizard.show_page(2)
    page = wizard.method_page
    assert not page.buttons["full"].isEnabled()
    assert "Unavailable" in page.verdict_labels["full"].text()
    assert "more than the largest GPU has" in page.verdict_labels["full"].text()
    assert page.buttons["qlora"].isEnabled() and "fits GPU 0" in page.verdict_labels["qlora"].text()
    page.buttons["full"].setChecked(True)  # e.g. chosen before a smaller GPU was found
    assert page.problem_label.isVisible()
    assert not wizard.go_next() and "Full fine-tune cannot run here" in page.problem()

    wizard.set_device_report(None)  # not known yet: nothing disabled, and it says so
    assert all(b.isEnabled() for b in page.buttons.values())
    assert "still being checked" in page.verdict_labels["full"].text()


def test_settings_mark_invalid_values_on_the_field(qtbot, wizard):
    wizard.show_page(3)
    page = wizard.settings_page
    lr = page.editors["learning_rate"]
    lr.editor.setText("fast")
    assert lr.error_label.isVisible() and "not a number" in lr.error_label.text()
    assert "not a number" in lr.editor.toolTip()
    epochs = page.editors["epochs"]
    epochs.editor.setText("0")
    assert "below the minimum" in epochs.error_label.text()
    assert not wizard.go_next() and wizard.current_page() is page
    assert "Learning rate" in page.problem() and "Epochs" in page.problem()
    lr.editor.setText("2e-4")
    epochs.editor.setText("1")
    assert not lr.error_label.isVisible() and not epochs.error_label.isVisible()
    assert page.preset_combo.currentText() == "Custom"

    page.editors["global_batch_size"].editor.setText("1")  # smaller than micro batch 2: a cross-field rule
    assert "smaller than micro_batch_size" in page.editors["global_batch_size"].error_label.text()
    assert not wizard.go_next()
    page.editors["global_batch_size"].editor.setText("16")
    page.editors["lora_target_modules"].editor.setText("")
    assert "name at least one layer" in page.editors["lora_target_modules"].error_label.text()
    page.editors["lora_target_modules"].editor.setText("q_proj, k_proj, v_proj")
    assert wizard.go_next()
    assert wizard.state.config.lora_target_modules == ["q_proj", "k_proj", "v_proj"]
    assert wizard.state.config.learning_rate == 2e-4 and wizard.state.config.global_batch_size == 16

    wizard.show_page(3)
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("qlora"))
    page.preset_combo.activated.emit(page.preset_combo.currentIndex())
    assert page.editors["lora_r"].editor.text() == "64"
    assert "Dettmers" in page.preset_source.text()
    assert wizard.state.config.method == "lora"  # the method stays the one chosen on its page


def test_compute_page_refusals(qtbot, wizard):
    wizard.set_device_report(_gpu(count=2, bf16=False))
    wizard.show_page(4)
    page = wizard.compute_page
    assert len(page.gpu_checks) == 2 and page.processes_spin.value() == 2
    for check in page.gpu_checks:
        check.setChecked(False)
    assert not wizard.go_next() or wizard.current_page() is page
    assert page.problem() == "Tick at least one GPU to train on."
    page.gpu_checks[1].setChecked(True)
    page.precision_combo.setCurrentIndex(page.precision_combo.findData("bf16"))
    assert "bf16 needs a GPU" in page.problem_label.text()
    assert page.commit() is not None
    page.precision_combo.setCurrentIndex(page.precision_combo.findData("fp16"))
    assert page.commit() is None
    assert wizard.selected_gpus() == [1] and wizard.state.config.num_processes == 1

    wizard.set_device_report(_cpu())
    page.enter()
    assert page.gpu_checks == [] and "No CUDA GPU" in page.device_note.text()
    page.precision_combo.setCurrentIndex(page.precision_combo.findData("fp16"))
    assert "needs a CUDA GPU" in page.commit()


def test_review_exports_slurm_and_refuses_a_used_run_folder(qtbot, wizard, tiny_model, tmp_path):
    wizard.state.model = tiny_model
    wizard.state.config.base_model = tiny_model.path
    wizard.show_page(5)
    page = wizard.review_page
    page.nodes_spin.setValue(2)
    page.gpus_spin.setValue(4)
    script = page.export_slurm(tmp_path / "job.sbatch")
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gres=gpu:4" in text and "--num_processes 8" in text
    exported = TrainConfig.load(tmp_path / "job.yaml")
    assert exported.base_model == tiny_model.path and exported.num_processes == 4
    assert f"export CONFIG={tmp_path / 'job.yaml'}" in text
    assert page.slurm_note.isVisible()

    used = tmp_path / "old-run"
    used.mkdir()
    (used / "config.yaml").write_text("method: lora\n")
    page.run_dir_edit.setText(str(used))
    page.run_dir_edit.textEdited.emit(str(used))
    assert "already holds a run" in page.commit()
    assert page.command_edit.text() == user_command(used / "config.yaml")


def test_launch_from_the_first_page_opens_the_page_that_cannot_run(qtbot, wizard, tiny_model):
    wizard.set_models([tiny_model])
    wizard.set_device_report(_cpu())
    wizard.state.config.data = []
    wizard.data_page.set_sources([])
    with qtbot.assertNotEmitted(wizard.sig_launch_requested):
        assert wizard.launch() is None
    assert wizard.current_page() is wizard.data_page
    assert wizard.data_page.problem().startswith("Add training data")


def test_keyboard_navigation_and_reset_with_a_base_config(qtbot, wizard, tiny_model, tmp_path):
    wizard.set_models([tiny_model])
    wizard.set_device_report(_cpu())
    wizard.activateWindow()
    wizard.model_page.tree.setFocus()
    qtbot.keyClick(wizard.model_page.tree, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert wizard.current_page() is wizard.data_page
    qtbot.keyClick(wizard.data_page.sources, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert wizard.current_page() is wizard.model_page

    base = TrainConfig(base_model=tiny_model.path, data=[SAMPLE], method="qlora", lora_r=4, output_dir="/old/run")
    wizard.reset(base)
    assert wizard.current_index() == 0 and wizard.state.config.output_dir == ""
    assert wizard.model_page.selected_model().path == tiny_model.path
    wizard.show_page(3)
    assert wizard.settings_page.editors["lora_r"].editor.text() == "4"
    wizard.show_page(2)
    assert wizard.method_page.selected_method() == "qlora"


def test_launch_right_away_waits_for_the_data_check(qtbot, wizard, tiny_model, demo_gguf):
    """The few-clicks path on a CPU: the demo model preselected, the sample data, the quick CPU trial;
    Launch (Ctrl+Return) before the data check ends launches when it passes."""
    demo = demo_model_info()
    assert demo is not None and Path(demo.path) == demo_gguf
    wizard.set_device_report(_cpu())
    wizard.set_models([tiny_model, demo])
    assert wizard.model_page.selected_model().path == demo.path
    assert wizard.data_page.is_checking()  # started as soon as a model was known
    with qtbot.waitSignal(wizard.sig_launch_requested, timeout=PREVIEW_MS) as blocker:
        qtbot.keyClick(wizard.model_page.tree, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        if wizard.state.preview is None:
            assert wizard.current_page() is wizard.data_page
            assert "as soon as the data check finishes" in wizard.data_page.problem()
    config = TrainConfig.load(blocker.args[0])
    assert config.max_steps == 30 and config.method == "lora" and config.data == [SAMPLE]
    assert config.base_model == demo.path
    assert Path(blocker.args[0]).parent.name.endswith("-SmolLM2-135M-Instruct-lora")
    assert wizard.state.preview["rows"][0]["eos"] == "<|im_end|>"  # the GGUF file's own tokenizer


def test_a_gpu_report_switches_the_untouched_default_to_the_paper_recipe(qtbot, wizard):
    assert wizard.state.preset == "quick-cpu-trial" and wizard.state.config.max_steps == 30
    wizard.set_device_report(_gpu())
    config = wizard.state.config
    assert wizard.state.preset == "medalpaca-lora"
    assert (config.max_steps, config.global_batch_size, config.learning_rate, config.save_steps) == (0, 128, 2e-5, 100)
    wizard.show_page(3)
    wizard.settings_page.editors["epochs"].editor.setText("1")  # the user's own value is kept from now on
    wizard.set_device_report(_cpu())
    assert wizard.state.config.epochs == 1.0 and wizard.state.preset == ""


def test_a_hidden_wizard_starts_no_data_check(qtbot, tiny_model):
    """The Fine-tune tab may never be opened: discovery results alone start no tokenizer process."""
    hidden = FinetuneWizard()
    qtbot.addWidget(hidden)
    hidden.set_device_report(_cpu())
    hidden.set_models([tiny_model])
    assert not hidden.data_page.is_checking()
    hidden.show()
    assert hidden.data_page.is_checking()
    hidden.shutdown()
    assert not hidden.data_page.is_checking() and hidden.state.preview is None
    assert not hidden.data_page.problem_label.isVisible()  # a stopped check is not a data problem
    hidden.data_page.request_preview()  # and the next request runs it again
    assert hidden.data_page.is_checking()
    hidden.shutdown()
