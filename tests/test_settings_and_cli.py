"""App settings persistence and the CLI's plain answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.settings import AppSettings, SettingsError, load_settings, save_settings, settings_path


def test_settings_defaults_round_trip_and_help():
    assert load_settings() == AppSettings()
    s = AppSettings(model_folders=["/models"], allow_pickle_weights=True)
    path = save_settings(s)
    assert path == settings_path()
    assert load_settings() == s
    assert "pickle" in AppSettings.field_help("allow_pickle_weights")


def test_bad_settings_file_is_a_clear_error_and_untouched():
    settings_path().write_text("model_folders: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid settings"):
        load_settings()
    assert settings_path().read_text() == "model_folders: [unclosed\n"


@pytest.mark.parametrize("text", ["allow_pickle_weights: 'false'\n", "scan_hf_cache: 1\n", "model_folders: /one\n",
                                  "model_folders: [[a]]\n", "[" * 3000, "\udcff"])
def test_settings_of_the_wrong_type_are_refused_not_taken_as_true(text):
    settings_path().write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(SettingsError, match="not valid settings"):
        load_settings()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", [["bench"], ["train", "cfg.yaml"], ["export", "--model", "m", "--out", "o.gguf"]])
def test_a_wrong_flag_is_a_usage_error(command):
    """An unknown flag is bad input (ExitCode.BAD_INPUT) named on stderr, before any work starts."""
    proc = _cli(*command, "--prompt", "hi")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "--prompt" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_devices_json_is_clean_and_parses():
    proc = _cli("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    report = DeviceReport.from_dict(json.loads(proc.stdout))
    assert report.cpu_threads >= 1 and report.ram_total > 0
    assert report.torch_version
    human = _cli("devices")
    assert human.returncode == 0 and "RAM:" in human.stdout


def test_usage_errors_exit_2():
    proc = _cli("export", "--model", "x")
    assert proc.returncode == 2 and "--out" in proc.stderr
