"""ModelTableModel: discovered LLMs (core ModelInfo) as rows of a QTableView."""

from __future__ import annotations

import enum
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont, QIcon
from PySide6.QtWidgets import QApplication, QStyle

from medalpaca_desktop.core.model_info import ModelInfo, format_parameters, format_size

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
MODEL_ROLE = Qt.ItemDataRole.UserRole + 2

KIND_LABELS = {"hf": "Hugging Face", "gguf": "GGUF", "adapter": "LoRA adapter"}
SOURCE_LABELS = {
    "demo": "Demo: not medical, for trying the app",
    "folder": "Your folder",
    "hf-cache": "Hugging Face cache",
}

_Index = QModelIndex | QPersistentModelIndex
_NO_PARENT = QModelIndex()  # Qt's default argument, built once (an invalid index holds no state)


class Column(enum.IntEnum):
    NAME = 0
    KIND = 1
    ARCHITECTURE = 2
    PARAMETERS = 3
    QUANTIZATION = 4
    CONTEXT = 5
    SIZE = 6
    SOURCE = 7


HEADERS = {
    Column.NAME: "Name",
    Column.KIND: "Kind",
    Column.ARCHITECTURE: "Architecture",
    Column.PARAMETERS: "Parameters",
    Column.QUANTIZATION: "Quantization",
    Column.CONTEXT: "Context",
    Column.SIZE: "Size",
    Column.SOURCE: "Source",
}
HEADER_TIPS = {
    Column.PARAMETERS: "Number of weights (estimated for quantized Hugging Face models)",
    Column.QUANTIZATION: "GGUF file type or Hugging Face quantization method; '-' means full precision",
    Column.CONTEXT: "Longest prompt plus answer the model was built for, in tokens",
    Column.SIZE: "Space on disk",
}
NUMERIC = {Column.PARAMETERS, Column.CONTEXT, Column.SIZE}


def source_label(info: ModelInfo) -> str:
    return SOURCE_LABELS.get(info.source, info.source)


def kind_label(info: ModelInfo) -> str:
    return KIND_LABELS.get(info.kind, info.kind)


class ModelTableModel(QAbstractTableModel):
    """Read-only rows of ModelInfo; SORT_ROLE gives numbers for numeric columns."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._models: list[ModelInfo] = []

    # -- content ----------------------------------------------------------------

    def set_models(self, models: list[ModelInfo]) -> None:
        self.beginResetModel()
        self._models = list(models)
        self.endResetModel()

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def model_at(self, row: int) -> ModelInfo | None:
        return self._models[row] if 0 <= row < len(self._models) else None

    def row_of(self, path: str) -> int:
        """Row of the model at `path`, -1 if not listed."""
        for row, info in enumerate(self._models):
            if info.path == path:
                return row
        return -1

    # -- Qt interface -----------------------------------------------------------

    def rowCount(self, parent: _Index = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._models)

    def columnCount(self, parent: _Index = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(Column)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(Column):
            return None
        column = Column(section)
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS.get(column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        info = self.model_at(index.row()) if index.isValid() else None
        if info is None:
            return None
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(info, column)
        if role == SORT_ROLE:
            return self._sort_key(info, column)
        if role == MODEL_ROLE:
            return info
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(info)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.DecorationRole and column == Column.NAME:
            return self._decoration(info)
        if role == Qt.ItemDataRole.FontRole and column == Column.SOURCE and info.is_demo:
            font = QFont()
            font.setItalic(True)
            return font
        return None

    @staticmethod
    def _display(info: ModelInfo, column: Column) -> str:
        if column == Column.NAME:
            return info.name
        if column == Column.KIND:
            return kind_label(info)
        if column == Column.ARCHITECTURE:  # "llama", not "LlamaForCausalLM": the details pane has both
            return info.model_type or info.architecture or "-"
        if column == Column.PARAMETERS:
            return format_parameters(info.parameters)
        if column == Column.QUANTIZATION:
            return info.quantization or "-"
        if column == Column.CONTEXT:
            return f"{info.context_length:,}" if info.context_length else "-"
        if column == Column.SIZE:
            return format_size(info.size_bytes)
        return source_label(info)

    @staticmethod
    def _sort_key(info: ModelInfo, column: Column) -> Any:
        if column == Column.PARAMETERS:
            return info.parameters or 0
        if column == Column.CONTEXT:
            return info.context_length or 0
        if column == Column.SIZE:
            return info.size_bytes or 0
        return ModelTableModel._display(info, column).lower()

    @staticmethod
    def _tooltip(info: ModelInfo) -> str:
        lines = [info.path]
        if info.note:
            lines.append(info.note)
        if info.pickle_weights:
            lines.append("Pickle weights: not loaded by default.")
        return "\n".join(lines)

    @staticmethod
    def _decoration(info: ModelInfo) -> QIcon | None:
        style = QApplication.style()
        if info.pickle_weights or not info.supported:
            return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        if info.is_demo:
            return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxInformation)
        return None
