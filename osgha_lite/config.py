"""Experiment profiles: one JSON file per named configuration.

A profile says which dataset, backbone and settings an experiment uses. The
built-in profiles live in ``osgha_lite/profiles/<name>.json``; a path to any
JSON file with the same fields works too. Notebooks take the profile name as
a Papermill parameter (``PROFILE``) and every result file stores the full
profile it was produced with.

Built-in profiles:

* ``lite`` (default): Flickr8k, lite backbone, CPU.
* ``paper-flickr30k``: Flickr30K (Karpathy), open_clip ViT-B-32 ``openai``.
* ``paper-coco``: MS-COCO (Karpathy), open_clip ViT-B-32 ``openai``, 5K and 1K protocols.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
REQUIRED_FIELDS = ("name", "dataset", "backbone")


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and field."""


def available_profiles() -> list[str]:
    """Names of the built-in profiles (found by glob, not by a hand-kept list)."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.json"))


def load_profile(name_or_path: str, overrides: dict | None = None) -> dict:
    """Load a built-in profile by name, or a JSON file by path; apply ``overrides``
    (a nested dict merged key by key) and return a fresh dict."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ProfileError(f"no profile {name_or_path!r}: {path} does not exist; built-in profiles: "
                           f"{', '.join(available_profiles())}")
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ProfileError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    for field in REQUIRED_FIELDS:
        if field not in profile:
            raise ProfileError(f"{path}: missing field {field!r}")
    if "kind" not in profile["backbone"]:
        raise ProfileError(f"{path}: missing field 'backbone.kind' (lite or openclip)")
    return merge(profile, overrides or {})


def merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge: values of ``overrides`` win; neither input is modified."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


SMOKE_SETTINGS = {"smoke_images": 60, "backbone": {"train": {"epochs": 2, "patience": 1}}, "eval": {"bootstrap": 50}}


def notebook_profile(name_or_path: str, smoke: bool = False) -> dict:
    """The profile a notebook runs with. ``smoke=True`` shrinks every split to
    its first ``smoke_images`` images, trains for two epochs and renames the
    profile ``<name>-smoke`` so that its results never overwrite real ones."""
    profile = load_profile(name_or_path)
    if smoke:
        profile = merge(profile, SMOKE_SETTINGS)
        profile["name"] = f"{profile['name']}-smoke"
    return profile
