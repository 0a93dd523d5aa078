"""Getting models from the Hugging Face hub: the only part of the app that goes online.

`catalog` (the models the Download dialog offers) and the folder helpers below are
light and Qt-free: the GUI imports them. `download` imports huggingface_hub and
runs only in the worker process of `medalpaca download`, never in the GUI (an
import-linter contract keeps huggingface_hub out of `medalpaca_desktop.ui`).
"""

from __future__ import annotations

import re
from pathlib import Path

from medalpaca_desktop.core import paths

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
STAGING_DIR = ".download"  # hidden: discovery skips it, so a partial file is never offered
MANIFEST_NAME = ".medalpaca-download.json"


def downloads_dir() -> Path:
    """data_dir()/models: every downloaded model lives in a sub-folder here.

    Discovery always scans it (the model manager and `medalpaca models list`).
    Not created here: a fresh install without downloads has no such folder.
    """
    return paths.data_dir() / "models"


def datasets_dir() -> Path:
    """data_dir()/datasets: Medical Meadow (and other hub datasets) downloaded with `--dataset`.

    Kept apart from models/ so model discovery never looks at training data.
    """
    return paths.data_dir() / "datasets"


def is_valid_repo_id(repo_id: str) -> bool:
    """'org/name' as the hub spells repo ids (no '..', no '--' in the way of the folder name)."""
    return bool(REPO_ID_RE.match(repo_id or "")) and ".." not in repo_id


def repo_folder(repo_id: str, root: Path | None = None) -> Path:
    """Where `org/name` is downloaded to: <downloads_dir>/org--name (the hub cache's own escaping)."""
    if not is_valid_repo_id(repo_id):
        raise ValueError(f"not a Hugging Face repo id (expected org/name): {repo_id!r}")
    return (root or downloads_dir()) / repo_id.replace("/", "--")


def dataset_folder(repo_id: str) -> Path:
    """Where the dataset repo `org/name` is downloaded to: <datasets_dir>/org--name."""
    return repo_folder(repo_id, datasets_dir())


def gated_advice(page_url: str, has_token: bool) -> str:
    """What to do about a gated repo, as one clause (the worker's errors, its listing, the dialog).

    A gated repo's files need an access token whose account has accepted the repo's
    license on its page; `has_token` says whether a token is set up already, so the
    clause names the step that is missing.
    """
    if has_token:
        return (f"the access token set up here is sent, so the account it belongs to must accept the license at "
                f"{page_url} (some owners also approve each request)")
    return (f"accept its license at {page_url} (logged in to Hugging Face), then give the app an access token: "
            "run `hf auth login`, or set HF_TOKEN")
