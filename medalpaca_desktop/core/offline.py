"""Every process but the download worker stays off the network, and libraries' network noise stays quiet.

Why here, in one place: the Hugging Face libraries read their offline switches once, at
import, and some of them reach for the Hub on their own (bitsandbytes, on a CPU with
AVX-512 BF16, asks the `kernels` package for a kernel from the Hub at import and logs
"Failed to load CPU gemm_4bit_forward from kernels-community" when it cannot). The CLI
and every worker call `stay_offline()` before such a library is imported, so nothing
tries the network and that line never reaches a person; the download worker alone lifts
the switch afterwards (hub.download.allow_network).
"""

from __future__ import annotations

import logging
import os

#: the switches huggingface_hub, transformers and datasets read (telemetry too, for good measure).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}

#: (logger, start of a message) pairs that only say a library could not reach the Hub for an optional extra.
NETWORK_NOISE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("bitsandbytes.backends.mps.ops", "Failed to load"),
    # kernels >= 0.19 (transformers 5.25 needs it), offline: it cannot check the kernel's publisher
    ("kernels._internals.hf_hub", "Skipping publisher trust check"),
)


class _DropNetworkNoise(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self._start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._start)


def stay_offline() -> None:
    """Set the offline switches for this process (and its children) and silence the Hub-kernel noise."""
    os.environ.update(OFFLINE_ENV)
    for name, start in NETWORK_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNetworkNoise) for f in logger.filters):
            logger.addFilter(_DropNetworkNoise(start))
