"""The About box: what the app is, what it is not (a medical device), and the paper."""

from __future__ import annotations

import platform

import PySide6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from medalpaca_desktop import __version__
from medalpaca_desktop.ui.icons import app_icon

NOT_A_MEDICAL_DEVICE = (
    "MedAlpaca Desktop is not a medical device. Its answers can be wrong; do not use them for "
    "diagnosis or treatment without a clinician's judgement."
)
PRIVACY = "Nothing leaves this machine."
DESCRIPTION = (
    "An offline workstation for clinicians and researchers: chat with local medical language models, "
    "fine-tune them on your own data, and score them on USMLE-style exams. It carries the MedAlpaca "
    "paper's workflow onto one desktop."
)
LICENSE = "Apache License 2.0"
CITATION = (
    "Han T, Adams LC, Papaioannou JM, Grundmann P, Oberhauser T, Löser A, Truhn D, Bressem KK. "
    "MedAlpaca – An Open-Source Collection of Medical Conversational AI Models and Training Data. "
    "arXiv:2304.08247, 2023."
)


def about_text() -> str:
    """The whole box as plain text (for tests and for copying)."""
    return "\n\n".join([f"MedAlpaca Desktop {__version__}", NOT_A_MEDICAL_DEVICE, PRIVACY, DESCRIPTION,
                        f"License: {LICENSE}", f"Cite: {CITATION}"])


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About MedAlpaca Desktop")
        self.setMinimumWidth(560)

        icon = QLabel()
        icon.setPixmap(app_icon("app").pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        title = QLabel(f"<h2 style='margin:0'>MedAlpaca Desktop</h2>Version {__version__}")
        heading = QHBoxLayout()
        heading.addWidget(icon)
        heading.addWidget(title, 1)

        self.warning_label = QLabel(f"<b>{NOT_A_MEDICAL_DEVICE}</b>")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("QLabel { background: #fdecea; color: #6b1010; border: 1px solid #e3a09b;"
                                         " border-radius: 4px; padding: 8px; }")
        self.privacy_label = QLabel(f"<b>{PRIVACY}</b> Chats, models and training data stay on this computer; "
                                    "workers run "
                                    "with the Hugging Face hub offline unless you start a download yourself.")
        self.privacy_label.setWordWrap(True)
        description = QLabel(DESCRIPTION)
        description.setWordWrap(True)
        license_label = QLabel(f"License: {LICENSE}. Models you load keep their own licenses.")
        license_label.setWordWrap(True)
        cite_caption = QLabel("If you use it in research, please cite the MedAlpaca paper:")
        self.citation_view = QPlainTextEdit(CITATION)
        self.citation_view.setReadOnly(True)
        self.citation_view.setMaximumHeight(72)
        versions = QLabel(f"Python {platform.python_version()} · Qt for Python {PySide6.__version__}")
        versions.setStyleSheet("QLabel { color: palette(placeholder-text); }")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addLayout(heading)
        for widget in (self.warning_label, self.privacy_label, description, license_label, cite_caption,
                       self.citation_view, versions, buttons):
            layout.addWidget(widget)

    def text(self) -> str:
        return about_text()
