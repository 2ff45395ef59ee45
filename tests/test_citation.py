"""LICENSE and CITATION.cff at the top of the repository: the citation parses and names the paper."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The keys and types CFF 1.2.0 requires (https://github.com/citation-file-format/citation-file-format),
#: and those of a reference; checked with jsonschema.
SCHEMA = {
    "type": "object",
    "required": ["cff-version", "message", "title", "authors"],
    "properties": {
        "cff-version": {"const": "1.2.0"},
        "message": {"type": "string", "minLength": 1},
        "title": {"type": "string", "minLength": 1},
        "type": {"enum": ["software", "dataset"]},
        "license": {"type": "string"},
        "version": {"type": ["string", "number"]},
        "authors": {"type": "array", "minItems": 1, "items": {"type": "object", "minProperties": 1}},
        "references": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["type", "title", "authors"],
                      "properties": {"authors": {"type": "array", "minItems": 1}}},
        },
    },
}


def citation() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_cff_parses_and_has_the_required_keys():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(citation(), SCHEMA)


def test_citation_cites_this_companion_and_lists_the_paper():
    cff = citation()
    assert "osgha-lite" in cff["title"] and cff["license"] == "MIT"
    (paper,) = cff["references"]
    assert paper["title"].startswith("OS-HGAdapter: Open Semantic Hypergraph Adapter")
    assert paper["year"] == 2025 and paper["authors"][0]["family-names"] == "Chen"
    assert any("2510.13131" in str(identifier["value"]) for identifier in paper["identifiers"])


def test_license_is_mit_as_the_project_says():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the osgha-lite authors" in text
