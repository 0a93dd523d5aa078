"""The app's own icons (resources/icons/*.svg), loaded once per name."""

from __future__ import annotations

import functools
from pathlib import Path

from PySide6.QtGui import QIcon, QPixmap

from resources import resource_path


@functools.cache
def app_icon(name: str) -> QIcon:
    """QIcon for resources/icons/<name>.svg; an empty icon if it is missing."""
    node = resource_path("icons", f"{name}.svg")
    if isinstance(node, Path):
        return QIcon(str(node)) if node.is_file() else QIcon()
    try:  # a zipped install: no file path, render from the bytes
        data = node.read_bytes()
    except OSError:
        return QIcon()
    pixmap = QPixmap()
    pixmap.loadFromData(data, "SVG")
    return QIcon(pixmap)
