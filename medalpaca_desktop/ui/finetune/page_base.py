"""What every fine-tune wizard page shares: the draft run (WizardState) and a problem banner.

A page reads the draft when it is shown (`enter`) and writes its part back when the user
moves on (`commit`), which returns a one-line reason when the page's input cannot run; the
wizard then stays on the page and the banner shows the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.model_info import ModelInfo
from trainer.config import TrainConfig

ERROR_STYLE = ("QLabel#problemBanner { background: #fdecea; color: #8a1c1c; border: 1px solid #e0a3a3;"
               " border-radius: 4px; padding: 6px 8px; }")
NOTE_STYLE = ("QLabel#noteBanner { background: palette(alternate-base); border: 1px solid palette(mid);"
              " border-radius: 4px; padding: 6px 8px; }")
INVALID_STYLE = "border: 1px solid #c62828; background: #fff5f5;"
ERROR_TEXT_STYLE = "color: #b71c1c;"


@dataclass
class WizardState:
    """The run being put together; pages read and write it."""

    config: TrainConfig
    model: ModelInfo | None = None
    report: DeviceReport | None = None
    preview: dict[str, Any] | None = None  # the last `trainer preview --json` result
    preview_key: str = ""  # what that preview was computed for
    gpus: list[int] = field(default_factory=list)  # chosen GPU indices (empty: CPU or all)
    run_dir: str = ""  # chosen by the user; "" = a new folder under runs_dir()
    preset: str = ""


def banner(object_name: str = "problemBanner") -> QLabel:
    label = QLabel()
    label.setObjectName(object_name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setStyleSheet(ERROR_STYLE if object_name == "problemBanner" else NOTE_STYLE)
    label.setVisible(False)
    return label


def heading(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * 1.3)
    font.setBold(True)
    label.setFont(font)
    return label


class WizardPage(QWidget):
    """A page: a title, an explanation, its content, and a banner for what stops the user."""

    title = ""
    sig_changed = Signal()

    def __init__(self, state: WizardState, intro: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.problem_label = banner()
        self._layout = QVBoxLayout(self)
        self._layout.addWidget(heading(self.title))
        intro_label = QLabel(intro)
        intro_label.setWordWrap(True)
        self._layout.addWidget(intro_label)
        self._layout.addWidget(self.problem_label)

    @property
    def body(self) -> QVBoxLayout:
        return self._layout

    def show_problem(self, text: str | None) -> None:
        self.problem_label.setText(text or "")
        self.problem_label.setVisible(bool(text))

    def problem(self) -> str | None:
        return self.problem_label.text() if self.problem_label.isVisible() else None

    # -- overridden by pages ---------------------------------------------------

    def enter(self) -> None:
        """The page is about to be shown: refresh from the state."""

    def commit(self) -> str | None:
        """Write this page's input into the state; the reason it cannot run, or None."""
        return None

    def refresh_environment(self) -> None:
        """Models or the device report changed."""
