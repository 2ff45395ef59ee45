"""The stand-in's stored tokenizer and config: the same as read from the GGUF, verified, repaired when damaged."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds tools/

from osgha_lite.atomic import IntegrityError  # noqa: E402
from osgha_lite.backbones.features import CacheWarning  # noqa: E402
from tools.ollama_standin import gguf_parts as parts  # noqa: E402
from tools.ollama_standin.gguf_path import smollm2_gguf_path  # noqa: E402

TEXTS = ["A dog runs along the beach .", "naïve café, 東京 🙂  two  spaces\n\nand a new line",
         "<|im_start|>user\nhi<|im_end|>", ""]
MESSAGES = [{"role": "system", "content": "Describe the caption."}, {"role": "user", "content": TEXTS[0]}]


@pytest.fixture(scope="module")
def from_gguf():
    """Tokenizer and config read directly from the packaged SmolLM2 GGUF (no store)."""
    from transformers import AutoConfig, AutoTokenizer

    gguf = smollm2_gguf_path()
    return (AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name),
            AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


def _same_parts(tokenizer, config, reference) -> None:
    ref_tokenizer, ref_config = reference
    for text in TEXTS:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == \
            ref_tokenizer(text, add_special_tokens=False)["input_ids"]
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert rendered == ref_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert tokenizer.all_special_tokens == ref_tokenizer.all_special_tokens
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (ref_tokenizer.eos_token_id, ref_tokenizer.pad_token_id)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == ref_tokenizer.decode(ids)
    ours, theirs = config.to_dict(), ref_config.to_dict()
    ours.pop("_name_or_path"), theirs.pop("_name_or_path")
    assert ours == theirs


def _no_gguf_reads(monkeypatch) -> None:
    """Make any read of a GGUF by transformers fail, so a test proves the parts came from the store."""
    from transformers import AutoConfig, AutoTokenizer

    for cls in (AutoConfig, AutoTokenizer):
        original = cls.from_pretrained.__func__

        def guarded(klass, *args, _original=original, **kwargs):
            assert "gguf_file" not in kwargs, "the GGUF was read again"
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(guarded))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The folder the first ``gguf_parts`` call stores (in a fresh cache) and what that call returned."""
    cache = tmp_path_factory.mktemp("llm")
    gguf = smollm2_gguf_path()
    first = parts.gguf_parts(gguf, cache_dir=cache)
    folder = parts.parts_folder(parts.parts_key(gguf), cache)
    assert not [p.name for p in cache.iterdir() if p != folder]  # no staging folder left behind
    return folder, first


def test_stored_parts_equal_the_ggufs_and_a_second_load_reads_only_the_store(stored, monkeypatch, from_gguf):
    gguf = smollm2_gguf_path()
    folder, first = stored
    _same_parts(*first, from_gguf)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == parts.parts_key(gguf)
    assert set(parts.REQUIRED_FILES) <= set(manifest)

    _no_gguf_reads(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        tokenizer, config = parts.gguf_parts(gguf, cache_dir=folder.parent)
    _same_parts(tokenizer, config, from_gguf)


def test_a_damaged_store_is_named_and_read_from_the_gguf_again(tmp_path, from_gguf, stored):
    gguf = smollm2_gguf_path()
    folder = parts.parts_folder(parts.parts_key(gguf), tmp_path)
    shutil.copytree(stored[0], folder)

    stored = folder / "tokenizer.json"
    stored.write_text(stored.read_text().replace('"dog"', '"cat"', 1) + " ")
    with pytest.warns(CacheWarning, match=r"tokenizer\.json does not match its recorded SHA-256 \(damaged\)\); "
                                          r"reading them from .*\.gguf again"):
        tokenizer, config = parts.gguf_parts(gguf, cache_dir=tmp_path)
    _same_parts(tokenizer, config, from_gguf)

    with warnings.catch_warnings():  # the repair left a good store behind
        warnings.simplefilter("error", CacheWarning)
        parts.gguf_parts(gguf, cache_dir=tmp_path)

    # what else the check refuses (each would be repaired the same way)
    key = parts.parts_key(gguf)
    manifest = folder / "manifest.json"
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**recorded, "key": "gguf-sha256:another"}))
    with pytest.raises(IntegrityError, match=r"records the key 'gguf-sha256:another'"):
        parts._read(folder, key)
    manifest.write_text(json.dumps(recorded))
    (folder / "config.json").unlink()
    with pytest.raises(IntegrityError, match=r"config\.json is missing"):
        parts._read(folder, key)
    manifest.write_text("{")
    with pytest.raises(IntegrityError, match=r"manifest\.json cannot be read"):
        parts._read(folder, key)
