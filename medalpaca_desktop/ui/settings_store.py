"""The GUI's one copy of AppSettings: loaded once, saved on every change.

A settings.yaml that cannot be read is never overwritten silently: the app runs
on defaults and, the first time it saves, keeps the unreadable file beside the
new one as settings.yaml.unreadable (so a hand edit is never lost).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from medalpaca_desktop.core.settings import AppSettings, SettingsError, load_settings, save_settings, settings_path


class SettingsStore(QObject):
    """Holds the current AppSettings and tells the UI when they change."""

    sig_settings_changed = Signal(object)  # AppSettings

    def __init__(self, path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path or settings_path()
        self.load_error: str | None = None
        try:
            self._settings = load_settings(self.path)
        except SettingsError as exc:
            self.load_error = str(exc)
            self._settings = AppSettings()

    @property
    def settings(self) -> AppSettings:
        """A copy: change it and pass it to `save`."""
        return copy.deepcopy(self._settings)

    def load_error_summary(self) -> str:
        """The first line of the load error (YAML errors run to several lines)."""
        return (self.load_error or "").strip().splitlines()[0] if self.load_error else ""

    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".unreadable")

    def save(self, settings: AppSettings) -> None:
        """Write `settings` (OSError if the disk refuses) and announce them."""
        if self.load_error is not None and self.path.exists():
            shutil.copy2(self.path, self.backup_path())
        save_settings(settings, self.path)
        self.load_error = None
        self._settings = copy.deepcopy(settings)
        self.sig_settings_changed.emit(self.settings)
