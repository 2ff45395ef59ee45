"""Dataset declarations: which reader reads a dataset, from which folder, with which options.

A dataset is declared in data, not code: a JSON object

.. code-block:: json

    {"name": "my-photos", "reader": "captions", "folder": ".",
     "options": {"captions": "captions.csv", "images": "${data_root}/my-photos/images"},
     "help": "where to get the images"}

``reader`` is a key of :data:`osgha_lite.data.readers.READERS`; ``options`` are
the reader's keyword options (see :mod:`osgha_lite.data.readers`); ``folder``
(default ``"."``), ``help`` and ``description`` are optional. No other key
is accepted, so a misspelt key is an error rather than a silently ignored one.

Paths:

* ``${data_root}`` in ``folder`` or in any option string is the data root
  (``load_dataset(..., root=...)`` or ``$OSGHA_DATA_ROOT``).
* A relative ``folder`` is relative to the folder of the declaration file;
  for a declaration written inside a profile, to the data root.
* Relative paths in the options are relative to ``folder``.

Where names are looked up (:func:`find_declaration`), first match wins:

1. the profile's ``"datasets"`` object, when a profile is given: name ->
   declaration object, or name -> path of a declaration file (relative to
   the repository root unless absolute);
2. the built-in declarations ``osgha_lite/data/datasets/<name>.json``
   (:data:`DATASETS`);
3. the example declarations ``data/examples/<name>/dataset.json`` of the repository;
4. a path to a declaration file (a name ending in ``.json``); its ``name``
   defaults to the file's stem, or to its folder's name for ``dataset.json``.

A dataset's name becomes a folder and file name (``results/<profile>/external/<name>/``,
``data/augmentations/<name>.jsonl``), so it must be a plain name
(:func:`is_plain_name`): letters, digits, ``-``, ``_`` and ``.``, not ``.``
or ``..``; any other name is an error naming the declaration.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

from osgha_lite.data.captionset import DataError
from osgha_lite.paths import PROJECT_ROOT
from osgha_lite.data.readers import READERS
from osgha_lite.data.textfiles import read_json

BUILTIN_DIR = Path(__file__).resolve().parent / "datasets"
EXAMPLES_DIR = PROJECT_ROOT / "data" / "examples"
DECLARATION_KEYS = ("name", "reader", "folder", "options", "help", "description")
ROOT_VARIABLE = "${data_root}"
_FIXED_ARGUMENTS = ("folder", "split", "name", "skip_missing", "skip_bad_rows")
PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
PLAIN_NAME_RULE = "a plain name (letters, digits, '-', '_' and '.'; not '.' or '..')"


def is_plain_name(name) -> bool:
    """Whether ``name`` is a string of ASCII letters, digits, ``-``, ``_`` and ``.``, and not ``.`` or ``..``."""
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None and name not in (".", "..")


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one named dataset: its reader, folder and reader options.

    ``folder`` and ``options`` are as declared (``${data_root}`` not yet
    filled in); ``declared_in`` is the declaration file, or ``None`` for a
    declaration written inside a profile (its relative folder is then
    relative to the data root).
    """

    reader: str
    folder: str = "."
    options: dict = field(default_factory=dict)
    download_help: str = ""
    name: str = ""
    declared_in: Path | None = None

    def where(self) -> str:
        return str(self.declared_in) if self.declared_in else f"the profile's datasets.{self.name}"

    def resolve(self, root: Path) -> tuple[Path, dict]:
        """The dataset folder and the options with ``${data_root}`` filled in."""
        base = self.declared_in.parent if self.declared_in else root
        folder = base / _fill(self.folder, root, self.where())
        return Path(folder).expanduser().resolve(), _fill(self.options, root, self.where())


def _fill(value, root: Path, where: str):
    """``value`` with ``${data_root}`` replaced in every string; any other ``${...}`` is an error."""
    if isinstance(value, str):
        filled = value.replace(ROOT_VARIABLE, str(root))
        if "${" in filled:
            raise DataError(f"{where}: unknown variable in {value!r}; the only one is {ROOT_VARIABLE}")
        return filled
    if isinstance(value, dict):
        return {key: _fill(item, root, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, root, where) for item in value]
    return value


def parse_declaration(content, where: str, declared_in: Path | None, default_name: str) -> DatasetSpec:
    """A checked :class:`DatasetSpec` from a declaration object; ``where`` names it in errors."""
    if not isinstance(content, dict):
        raise DataError(f"{where}: a dataset declaration is a JSON object, not {type(content).__name__}")
    unknown = sorted(set(content) - set(DECLARATION_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; a declaration has {', '.join(DECLARATION_KEYS)}")
    for key in ("name", "reader", "folder", "help", "description"):
        if key in content and not isinstance(content[key], str):
            raise DataError(f"{where}: '{key}' must be a string, not {content[key]!r}")
    reader = content.get("reader")
    if reader not in READERS:
        raise DataError(f"{where}: 'reader' must be one of {', '.join(sorted(READERS))}, not {reader!r}")
    options = content.get("options", {})
    if not isinstance(options, dict):
        raise DataError(f"{where}: 'options' must be an object, not {options!r}")
    parameters = inspect.signature(READERS[reader]).parameters
    accepted = [p for p in parameters if p not in _FIXED_ARGUMENTS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"{where}: unknown option(s) {', '.join(unknown)} for reader {reader!r}; "
                        f"it accepts {', '.join(accepted)}")
    required = [p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in options]
    if required:
        raise DataError(f"{where}: reader {reader!r} needs the option(s) {', '.join(required)}")
    name = content.get("name", default_name)
    if not is_plain_name(name):
        label = "'name'" if "name" in content else "its name"
        raise DataError(f"{where}: {label} must be {PLAIN_NAME_RULE}, not {name!r}")
    return DatasetSpec(reader, content.get("folder", "."), options, content.get("help", ""), name, declared_in)


def read_declaration(path: str | Path) -> DatasetSpec:
    """The declaration in the JSON file ``path``."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"dataset declaration {path} does not exist")
    default = path.parent.name if path.name == "dataset.json" else path.stem
    return parse_declaration(read_json(path), str(path), path, default)


def builtin_declarations() -> dict[str, DatasetSpec]:
    """The built-in declarations, by name (found by glob, not by a hand-kept list)."""
    specs = {}
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        spec = read_declaration(path)
        if spec.name != path.stem:
            raise DataError(f"{path}: 'name' is {spec.name!r} but the file is named {path.name}")
        specs[spec.name] = spec
    return specs


DATASETS: dict[str, DatasetSpec] = builtin_declarations()


def find_declaration(name: str, profile: dict | None = None) -> DatasetSpec:
    """The declaration of dataset ``name`` (see the module docstring for the order of look-up)."""
    declared = (profile or {}).get("datasets", {})
    if not isinstance(declared, dict):
        raise DataError(f"profile {profile.get('name')!r}: 'datasets' must be an object (name -> declaration)")
    if name in declared:
        value = declared[name]
        if isinstance(value, str):
            path = Path(value).expanduser()
            spec = read_declaration(path if path.is_absolute() else PROJECT_ROOT / path)
        else:
            spec = parse_declaration(value, f"profile {profile.get('name')!r}, datasets.{name}", None, name)
        if spec.name != name:
            raise DataError(f"{spec.where()}: declares {spec.name!r} but the profile names it {name!r}")
        return spec
    if name in DATASETS:
        return DATASETS[name]
    example = EXAMPLES_DIR / name / "dataset.json"
    if "/" not in name and example.is_file():
        return read_declaration(example)
    if name.endswith(".json"):
        return read_declaration(name)
    examples = sorted(p.parent.name for p in EXAMPLES_DIR.glob("*/dataset.json"))
    raise DataError(f"unknown dataset {name!r}; built-in: {', '.join(sorted(DATASETS))}; examples: "
                    f"{', '.join(examples) or 'none'}; or give the path of a declaration .json file, or declare it "
                    "in the profile's 'datasets'")

