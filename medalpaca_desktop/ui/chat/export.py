"""A conversation as Markdown (to read or share) and as JSON (to keep or process).

Both contain the visible thread only (not replaced earlier versions) and note
answers that were stopped or interrupted. Qt-free so it is easy to test.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import paths
from medalpaca_desktop.ui.chat.citations import sources_of
from medalpaca_desktop.ui.chat.conversation import (
    STATUS_DONE,
    STATUS_INTERRUPTED,
    STATUS_STOPPED,
    STATUS_STREAMING,
    Conversation,
)

EXPORT_FORMAT = "medalpaca-desktop-chat"
EXPORT_VERSION = 1
DISCLAIMER = "Answers were written by a language model on this computer; they are not medical advice."

_STATUS_NOTES = {
    STATUS_STOPPED: "stopped by the user",
    STATUS_INTERRUPTED: "interrupted: the model process stopped",
    STATUS_STREAMING: "incomplete",
    "failed": "failed",
}


def _when(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def to_markdown(conv: Conversation) -> str:
    lines = [f"# {conv.title}", "", f"*Exported from MedAlpaca Desktop on {_when(_dt.datetime.now().timestamp())}. "
             f"{DISCLAIMER}*", ""]
    if conv.system_prompt:
        lines += ["**System prompt:**", "", *[f"> {ln}" for ln in conv.system_prompt.splitlines()], ""]
    for entry in conv.visible:
        who = {"user": "You", "assistant": "Assistant", "system": "System"}.get(entry.role, entry.role)
        heading = f"## {who}"
        model = entry.meta.get("model_name")
        if entry.role == "assistant" and model:
            heading += f" ({model})"
        lines += [heading, ""]
        lines.append(entry.content if entry.content else "*(no text)*")
        note = _STATUS_NOTES.get(entry.status) if entry.role == "assistant" else None
        if note:
            lines += ["", f"*[{note}]*"]
        if entry.role == "assistant" and (sources := sources_of(entry.meta)):
            lines += ["", "Sources:"] + [f"- [{s.n}] {s.where} ({s.path})" for s in sources]
            unknown = (entry.meta.get("citations") or {}).get("unknown") or []
            if unknown:
                lines.append(f"- *cited but not sent: {', '.join(f'[{n}]' for n in unknown)}*")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_json_data(conv: Conversation) -> dict[str, Any]:
    messages = []
    for entry in conv.visible:
        item: dict[str, Any] = {"role": entry.role, "content": entry.content, "created_at": _when(entry.created_at)}
        if entry.role == "assistant":
            item["status"] = entry.status if entry.meta.get("status") else STATUS_DONE
            for key in ("model", "model_name", "backend", "template", "sampling", "stats", "system", "documents",
                        "sources", "retrieval", "citations"):
                if key in entry.meta:
                    item[key] = entry.meta[key]
            prompt = entry.meta.get("prompt") or {}
            if prompt.get("tokens") is not None:
                item["prompt_tokens"] = prompt.get("tokens")
        if entry.token_count is not None:
            item["token_count"] = entry.token_count
        messages.append(item)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "title": conv.title,
        "created_at": _when(conv.created_at),
        "exported_at": _when(_dt.datetime.now().timestamp()),
        "system_prompt": conv.system_prompt,
        "disclaimer": DISCLAIMER,
        "messages": messages,
    }


def to_json(conv: Conversation) -> str:
    return json.dumps(to_json_data(conv), ensure_ascii=False, indent=2) + "\n"


def export_conversation(conv: Conversation, path: str | Path) -> Path:
    """Write Markdown for .md/.markdown/.txt, JSON otherwise; owner-only (0600): a chat may hold patient data."""
    path = Path(path)
    text = to_markdown(conv) if path.suffix.lower() in (".md", ".markdown", ".txt") else to_json(conv)
    return paths.write_private_text(path, text)
