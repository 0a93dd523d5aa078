"""Turn generated token ids into streamed text for the transformers backend.

`IncrementalDecoder` decodes one token at a time in O(1) per token (a short
window of ids, as text-generation-inference does), so long answers keep their
speed, and it waits while a multi-byte character is still incomplete.
`StopStringFilter` holds back text that could be the start of a stop string, so
the user never sees a stop string, not even briefly. `TokenSink` ties both to
the host's callback inside generate()'s loop and ends the answer on a stop
request or stop string.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import StoppingCriteria

REPLACEMENT_CHAR = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class IncrementalDecoder:
    """Text of each new token; the pieces concatenate to decode(all ids).

    SentencePiece byte-fallback tokens (<0xAD>) are held until a normal token
    follows: the library decodes a run of them as a whole, and an invalid run
    turns into one U+FFFD per byte, including bytes that looked like valid
    text while the run was still growing.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _is_byte_token(self, token_id: int) -> bool:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        return isinstance(piece, str) and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        if self._is_byte_token(token_id):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Whatever is still pending at the end (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""


class StopStringFilter:
    """Passes text through until a stop string appears; the stop string itself is never passed."""

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.hit = False

    def _held_back(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def feed(self, text: str) -> str:
        """The part of `text` (plus what was held back) that is safe to show now."""
        if self.hit or not text:
            return ""
        if not self._stop:
            return text
        self._pending += text
        found = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        if found:
            self.hit = True
            out, self._pending = self._pending[:min(found)], ""
            return out
        keep = self._held_back(self._pending)
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.hit else self._pending), ""
        return out


class TokenSink(StoppingCriteria):
    """Streams each new token's text and decides, in the same step, whether to stop.

    Why a stopping criterion and not a `generate(streamer=...)`: transformers 5
    evaluates stopping criteria before it hands the token to the streamer, so a
    stop requested from the streamer's callback would cost one more forward
    pass. Seeing the token here, the answer ends right after the token during
    which the stop was asked for (or the stop string appeared).
    """

    def __init__(self, tokenizer: Any, stop: list[str], on_text: Callable[[str], None],
                 should_stop: Callable[[], bool]) -> None:
        self._decoder = IncrementalDecoder(tokenizer)
        self._filter = StopStringFilter(stop)
        self._on_text = on_text
        self._should_stop = should_stop
        self.user_stopped = False
        self.token_ids: list[int] = []
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    @property
    def stop_string_hit(self) -> bool:
        return self._filter.hit

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        token_id = int(input_ids[0, -1])
        self.token_ids.append(token_id)
        self._emit(self._filter.feed(self._decoder.push(token_id)))
        if not self._filter.hit and not self.user_stopped:
            self.user_stopped = bool(self._should_stop())
        done = self._filter.hit or self.user_stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def finish(self) -> None:
        """Flush the text still held back (an incomplete character, a possible stop-string start)."""
        self._emit(self._filter.feed(self._decoder.flush()))
        self._emit(self._filter.flush())

    def _emit(self, text: str) -> None:
        if text:
            self._on_text(text)
