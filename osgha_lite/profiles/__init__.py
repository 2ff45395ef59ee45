"""Experiment profiles: one JSON file per named configuration.

A profile says which dataset, backbone and settings an experiment uses. The
built-in profiles live in ``osgha_lite/profiles/<name>.json``; a path to any
JSON file with the same fields works too. Notebooks take the profile name as
a Papermill parameter (``PROFILE``) and every result file stores the full
profile it was produced with.

Built-in profiles:

* ``lite`` (default): Flickr8k, lite backbone, CPU; the heads train on
  4,000 *pretrain* images and every method on the other 2,000 (*adapt*)
  training images (``"protocol"``; :func:`osgha_lite.data.load_profile_split`).
* ``lite-shared``: ``lite`` with the earlier protocol, heads and methods on
  the same training images (for comparison).
* ``paper-flickr30k``: Flickr30K (Karpathy), open_clip ViT-B-32 ``openai``.
* ``paper-coco``: MS-COCO (Karpathy), open_clip ViT-B-32 ``openai``, 5K and 1K protocols.

Two conveniences keep profiles short:

* ``"extends": "<profile>"`` takes every top-level field of the named
  profile (built-in name or path) that this profile does not set itself.
  The paper profiles extend ``lite``: they set the dataset, backbone and
  evaluation protocol and inherit the methods, training settings and sweeps.
  A field that is set replaces the parent's whole field (no deep merge), so a
  child's ``backbone`` never mixes with the parent's.
* ``{dataset}`` in any string value is replaced by the profile's
  ``dataset``, so cache paths such as
  ``data/augmentations/{dataset}.explanations.jsonl`` follow the dataset.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent
REQUIRED_FIELDS = ("name", "dataset", "backbone")


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and field."""


def available_profiles() -> list[str]:
    """Names of the built-in profiles (found by glob, not by a hand-kept list)."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.json"))


def load_profile(name_or_path: str, overrides: dict | None = None) -> dict:
    """Load a built-in profile by name, or a JSON file by path; resolve
    ``extends``, apply ``overrides`` (a nested dict merged key by key), fill
    in ``{dataset}`` and return a fresh dict."""
    path, profile = _read_with_parents(name_or_path, chain=())
    for field in REQUIRED_FIELDS:
        if field not in profile:
            raise ProfileError(f"{path}: missing field {field!r}")
    if "kind" not in profile["backbone"]:
        raise ProfileError(f"{path}: missing field 'backbone.kind' (lite or openclip)")
    profile = merge(profile, overrides or {})
    return _fill_dataset(profile, profile["dataset"])


def _profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ProfileError(f"no profile {name_or_path!r}: {path} does not exist; built-in profiles: "
                           f"{', '.join(available_profiles())}")
    return path


def _read_with_parents(name_or_path: str, chain: tuple[Path, ...]) -> tuple[Path, dict]:
    """The profile's JSON with the top-level fields of its ``extends`` chain filled in."""
    path = _profile_path(name_or_path)
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ProfileError(f"{path}: 'extends' goes round in a circle ({cycle})")
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ProfileError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(profile, dict):
        raise ProfileError(f"{path}: a profile is a JSON object, not {type(profile).__name__}")
    parent_name = profile.pop("extends", None)
    if parent_name is None:
        return path, profile
    if not isinstance(parent_name, str):
        raise ProfileError(f"{path}: field 'extends' must be a profile name or path, not {parent_name!r}")
    if Path(parent_name).suffix and not Path(parent_name).is_absolute():
        parent_name = str(path.parent / parent_name)  # a relative path is relative to this file
    _, parent = _read_with_parents(parent_name, (*chain, path.resolve()))
    return path, {**parent, **profile}


def _fill_dataset(value, dataset: str):
    """``value`` with ``{dataset}`` replaced by ``dataset`` in every string inside it."""
    if isinstance(value, str):
        return value.replace("{dataset}", dataset)
    if isinstance(value, dict):
        return {key: _fill_dataset(item, dataset) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_dataset(item, dataset) for item in value]
    return value


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
