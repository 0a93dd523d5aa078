"""Work around a PySide6 reference-count bug that aborts the interpreter.

In PySide6 6.12.0 (and possibly nearby releases) every `SignalInstance.emit()`
from Python drops one reference to `True` that it never took. On Python < 3.12,
where `True` is not immortal, a few hundred emits (a streamed chat answer, a
1000-token test) end in "Fatal Python error: bool_dealloc". We measure the leak
once at import and, only when it is there, give back the reference after each
emit. Harmless on fixed releases: the probe sees no leak and patches nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

_PROBE_EMITS = 32
_patched = False

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


class _Probe(QObject):
    sig_probe_emitted = Signal()


def _measure_leak_per_emit() -> int:
    """References to True lost per emit (0 on a healthy PySide6)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBE_EMITS):
        probe.sig_probe_emitted.emit()
    lost = before - sys.getrefcount(True)
    probe.deleteLater()
    for _ in range(max(0, lost)):  # give back what the probe itself lost
        _incref(True)
    return lost // _PROBE_EMITS if lost > 0 and lost % _PROBE_EMITS == 0 else 0


def apply_emit_refcount_fix() -> bool:
    """Patch SignalInstance.emit when this PySide6 leaks; True if patched."""
    global _patched
    if _patched:
        return True
    if sys.version_info >= (3, 12):  # True is immortal there: the leak is harmless
        return False
    leak = _measure_leak_per_emit()
    if leak <= 0:
        return False
    original = SignalInstance.emit
    incref = _incref

    def emit(self: SignalInstance, *args: Any) -> Any:
        result = original(self, *args)
        for _ in range(leak):
            incref(True)
        return result

    SignalInstance.emit = emit  # type: ignore[method-assign]
    _patched = True
    return True
