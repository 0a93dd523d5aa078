"""The Benchmark tab's "Check a model" page: any two models, the same questions, the paired verdict.

A real check of the tiny LLaMA (transformers) against its f32 GGUF export (llama.cpp) on a few
sample questions: the page shows bench.verify's numbers, and both runs land in History and
the Compare tab.
"""

from __future__ import annotations

import json
import subprocess
import sys

from test_ui_benchmark import MEDQA, make_tab  # noqa: F401  (the fixture)

from medalpaca_desktop.core.models import inspect_model


def test_check_two_models_shows_the_verdict_and_both_runs(qtbot, make_tab, tiny_llama_dir, tiny_gguf):  # noqa: F811
    tab = make_tab()
    panel = tab.verify_panel
    tab.set_models([inspect_model(tiny_llama_dir), inspect_model(tiny_gguf)])
    assert panel.empty_label.isHidden() and panel.start_button.isEnabled()
    assert not panel.progress.isTextVisible()  # an idle bar says nothing, not "0%"
    panel.pick(str(tiny_llama_dir), str(tiny_gguf))
    panel.questions_edit.setText(f"{MEDQA}:5")
    with qtbot.waitSignal(panel.sig_finished, timeout=240_000) as blocker:
        assert panel.start()
        assert panel.progress.isTextVisible()
    result = blocker.args[0]
    assert result["n_shared"] == 5 and result["acc_a"] == result["acc_b"] and not result["significantly_worse"]
    text = panel.verdict_label.text()
    assert f"{100 * result['acc_a']:.1f} %" in text and "No significant difference" in text
    assert tiny_llama_dir.name in text and tiny_gguf.name in text  # the models by name, not "the export"
    assert "95 % interval" in text and "n=5" in text
    assert len(tab.shown) == 2 and {run.run_dir.split("/")[-1] for run in tab.shown} == {"reference", "candidate"}
    assert tab.results_tabs.currentWidget() is tab.compare

    # the same verdict from the terminal, for any two models
    proc = subprocess.run([sys.executable, "-m", "bench", "verify", "--reference", str(tiny_llama_dir),
                           "--candidate", str(tiny_gguf), "--questions", f"{MEDQA}:5", "--out", result["out"],
                           "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(proc.stdout)
    assert (again["acc_a"], again["acc_b"], again["p_value"]) == (result["acc_a"], result["acc_b"], result["p_value"])


def test_check_refuses_one_model_twice(qtbot, make_tab, tiny_gguf):  # noqa: F811
    tab = make_tab()
    panel = tab.verify_panel
    tab.set_models([inspect_model(tiny_gguf)])
    assert not panel.empty_label.isHidden() and not panel.start_button.isEnabled()
    assert not panel.start()
    assert "Choose two different models" in panel.status_label.text()
