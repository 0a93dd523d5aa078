"""Which model answers: a list fed by the model manager, load progress, what is loaded, Unload."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Progress
from medalpaca_desktop.core.model_info import ModelInfo, format_size
from medalpaca_desktop.core.payloads import Loaded
from medalpaca_desktop.ui.chat.host_client import HostState
from medalpaca_desktop.ui.widgets.progress_bar import set_fraction

MODEL_ROLE = Qt.ItemDataRole.UserRole + 1


def model_label(info: ModelInfo) -> str:
    """'SmolLM2-135M-Instruct (demo) · Q4_1 · 105.5 MB'."""
    parts = [info.name]
    if info.quantization:
        parts.append(str(info.quantization))
    elif info.kind == "hf":
        parts.append("Hugging Face" + (f" {info.dtype}" if info.dtype else ""))
    if info.size_bytes:
        parts.append(format_size(info.size_bytes))
    return " · ".join(parts)


def chat_models(models: list[ModelInfo]) -> list[ModelInfo]:
    """Models one can chat with (adapters only with a known base; supported architectures); the demo last."""
    usable = [m for m in models if (m.kind in ("gguf", "hf") or (m.kind == "adapter" and m.base_model))
              and m.supported]
    return sorted(usable, key=lambda m: (m.is_demo, m.name.lower()))


class ModelPicker(QWidget):
    sig_model_selected = Signal(object)  # ModelInfo or None
    sig_load_requested = Signal(object)  # ModelInfo
    sig_unload_requested = Signal()
    sig_add_model_requested = Signal()
    sig_download_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(28)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setToolTip("The model that answers. Models come from the Models tab.")
        self.combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the model now (it also loads when you send the first question)")
        self.load_button.clicked.connect(self._on_load_button_clicked)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("End the model's process and give all its memory back")
        self.unload_button.clicked.connect(self.sig_unload_requested)
        self.add_button = QPushButton("Add a model…")
        self.add_button.setToolTip("Add a GGUF file or a folder of models on this computer")
        self.add_button.clicked.connect(self.sig_add_model_requested)
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Download a model from Hugging Face (the only time the app goes online)")
        self.download_button.clicked.connect(self.sig_download_requested)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.state_label = QLabel()
        self.state_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note_label = QLabel()
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #8a6d00;")
        self.note_label.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Model:"))
        row.addWidget(self.combo, 1)
        row.addWidget(self.load_button)
        row.addWidget(self.unload_button)
        row.addSpacing(12)
        row.addWidget(self.add_button)
        row.addWidget(self.download_button)
        info_row = QHBoxLayout()
        info_row.setContentsMargins(0, 0, 0, 0)
        info_row.addWidget(self.progress)
        info_row.addWidget(self.state_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(row)
        layout.addLayout(info_row)
        layout.addWidget(self.note_label)

        self._state = HostState.OFF
        self._loaded: Loaded | None = None
        self._loading_path: str | None = None
        self._searching = True
        self.set_models([], searching=True)

    # -- models -------------------------------------------------------------------

    def set_models(self, models: list[ModelInfo], searching: bool = False) -> None:
        """Replace the list, keeping the selection (else the loaded model, else the first)."""
        self._searching = searching
        keep = self.current_model()
        keep_path = keep.path if keep else (self._loaded.path if self._loaded else None)
        usable = chat_models(models)
        self.combo.blockSignals(True)
        self.combo.clear()
        for info in usable:
            self.combo.addItem(model_label(info))
            index = self.combo.count() - 1
            self.combo.setItemData(index, info, MODEL_ROLE)
            tip = info.path + (f"\n{info.note}" if info.note else "")
            if not info.has_chat_template:
                tip += "\nNo chat template in the file: a fallback format is used (see the Prompt button)."
            self.combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        if not usable:
            self.combo.addItem("Searching for models…" if searching else "No models yet: add or download one")
        self.combo.setEnabled(bool(usable))
        target = 0
        if keep_path:
            target = max(0, self.index_of(keep_path))
        self.combo.setCurrentIndex(target)
        self.combo.blockSignals(False)
        self._on_combo_current_index_changed(self.combo.currentIndex())

    def models(self) -> list[ModelInfo]:
        return [m for m in (self.combo.itemData(i, MODEL_ROLE) for i in range(self.combo.count())) if m is not None]

    def index_of(self, path: str) -> int:
        for i in range(self.combo.count()):
            info = self.combo.itemData(i, MODEL_ROLE)
            if info is not None and info.path == path:
                return i
        return -1

    def current_model(self) -> ModelInfo | None:
        return self.combo.currentData(MODEL_ROLE)

    def select_path(self, path: str) -> bool:
        index = self.index_of(path)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0

    def demo_model(self) -> ModelInfo | None:
        return next((m for m in self.models() if m.is_demo), None)

    @Slot(int)
    def _on_combo_current_index_changed(self, index: int) -> None:
        info = self.current_model()
        self.note_label.setText(f"⚠ {info.note}" if info is not None and info.note else "")
        self.note_label.setVisible(bool(info is not None and info.note))
        self._refresh()
        self.sig_model_selected.emit(info)

    @Slot()
    def _on_load_button_clicked(self) -> None:
        info = self.current_model()
        if info is not None:
            self.sig_load_requested.emit(info)

    # -- host state ---------------------------------------------------------------

    def set_host_state(self, state: HostState, loaded: Loaded | None, loading_path: str | None = None) -> None:
        self._state = state
        self._loaded = loaded
        self._loading_path = loading_path
        if state != HostState.LOADING:
            self.progress.hide()
        elif not self.progress.isVisible():
            self.progress.setRange(0, 0)  # busy until the first progress event
            self.progress.setFormat("Loading…")
            self.progress.show()
        self._refresh()

    def set_load_progress(self, event: Progress) -> None:
        set_fraction(self.progress, event.fraction)
        self.progress.setFormat(f"{event.message or 'Loading'} %p%" if event.fraction is not None else "Loading…")
        self.progress.setToolTip(event.message or event.stage)
        self.progress.show()

    def _refresh(self) -> None:
        info = self.current_model()
        loaded = self._loaded
        is_loaded = loaded is not None and info is not None and info.path in (loaded.path, loaded.adapter)
        busy = self._state in (HostState.LOADING, HostState.UNLOADING, HostState.GENERATING)
        self.load_button.setEnabled(info is not None and not busy and not is_loaded)
        self.load_button.setText("Reload" if is_loaded else "Load")
        self.unload_button.setEnabled(self._state not in (HostState.OFF, HostState.UNLOADING)
                                      and self._state != HostState.GENERATING)
        if self._state == HostState.LOADING:
            name = self._loading_path.rsplit("/", 1)[-1] if self._loading_path else "the model"
            text = f"Loading {name}…"
        elif self._state == HostState.UNLOADING:
            text = "Unloading…"
        elif loaded is not None:
            text = f"Loaded: <b>{loaded.path.rsplit('/', 1)[-1]}</b> · {loaded.summary()}"
            if loaded.notes:
                text += f"<br><span style='color:#8a6d00'>{' '.join(loaded.notes)}</span>"
            if info is not None and not is_loaded:
                text += " · <i>the selected model loads when you send</i>"
        elif info is not None:
            text = "<span style='color:gray'>Not loaded yet: it loads when you send your first question.</span>"
        else:
            text = ""
        self.state_label.setText(text)
