"""LLM caption augmentation: parsing, validation, the cache, and runs against the real model.

The end-to-end tests talk to the stand-in Ollama server (real SmolLM2-135M
GGUF) through the official ``ollama`` client; nothing is faked. Broken model
output is provoked with the real model by a reply budget (``num_predict``)
too small to finish a list.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standin_server import CAPTIONS as STANDIN_CAPTIONS
from standin_server import MODEL, standin  # noqa: F401 - fixture

from osgha_lite.llm.augment import (
    AugmentConfig,
    AugmentationCache,
    AugmentError,
    CacheAccessError,
    CacheLock,
    ModelIdentity,
    ModelNotFound,
    OllamaUnavailable,
    ValidationRules,
    augment_captions,
    cache_key,
    check_description,
    load_augmentations,
    load_template,
    parse_descriptions,
    read_records,
    tidy_caption,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = STANDIN_CAPTIONS[:4]


# --------------------------------------------------------------------------- parsing
def test_parse_numbered_list_ignores_preamble_and_postscript():
    reply = (
        "Sure! Here are three descriptions:\n"
        "1. A brown dog sprints across the sand.\n"
        "2) **A puppy** races along the shore.\n"
        "(3) Description 3: \"A hound dashes past the waves.\"\n"
        "\n"
        "I hope this helps!"
    )
    assert parse_descriptions(reply) == [
        "A brown dog sprints across the sand.",
        "A puppy races along the shore.",
        "A hound dashes past the waves.",
    ]


def test_parse_bullets_continuations_and_plain_lines():
    assert parse_descriptions("- A dog runs\non the beach.\n* A hound sprints.\n• A pup plays.") == [
        "A dog runs on the beach.", "A hound sprints.", "A pup plays.",
    ]
    assert parse_descriptions("A dog runs on the beach.\n\nA hound sprints on sand.\n") == [
        "A dog runs on the beach.", "A hound sprints on sand.",
    ]
    assert parse_descriptions("") == []
    assert parse_descriptions("1.\n2. A dog.") == ["", "A dog."]


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("A brown dog sprints across the sand.", None),
        ("a dog runs along the beach", "copy of the caption"),
        ("A dog runs.", "too short (3 words < 4)"),
        ("A dog " + "runs and runs " * 15 + "along the beach.", "too long (50 words > 40)"),
        ("Sure, here is a dog on the beach.", "chatter"),
        ("As an AI, I see a dog on the beach.", "chatter"),
        ("This caption shows a dog on the beach.", "talks about the task instead of the picture"),
        ("A rephrased version: the dog on the beach.", "talks about the task instead of the picture"),
        ("A cat sleeps on a sofa indoors.", "off-topic (shares no content word with the caption)"),
        ("Dogs running on beaches at sunset.", None),  # stems: dog, run, beach
    ],
)
def test_check_description_reasons(text, reason):
    assert check_description(text, "A dog runs along the beach .") == reason


def test_check_description_duplicates_cutoff_and_rules():
    caption = "A dog runs along the beach ."
    assert check_description("A brown dog sprints.", caption, accepted=["a brown dog sprints"]) == "duplicate"
    assert check_description("A brown dog sprints on the", caption, cut_off=True) == "cut off by num_predict"
    loose = ValidationRules(min_words=2, max_words=5, min_shared_words=0)
    assert check_description("A cat sleeps.", caption, loose) is None
    assert check_description("A cat sleeps on the sofa.", caption, loose) == "too long (6 words > 5)"


# --------------------------------------------------------------------------- prompt template
def test_template_messages():
    template = load_template()
    assert template.version == "descriptions_v1"
    messages = template.messages("a dog {k} runs .", 2)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"].splitlines() == [
        "1. A crimson car sits parked beside a leafy tree.",
        "2. Next to a tall tree, a red automobile is parked on the street.",
    ]
    assert 'Caption: "A dog {k} runs."' in messages[3]["content"]  # braces in captions are left alone
    assert "Write 2 different" in messages[3]["content"]
    assert tidy_caption("  a man  ,  smiling .") == "A man, smiling."
    with pytest.raises(AugmentError, match="fewer than k=6"):
        template.messages("a dog", 6)


def test_template_file_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("### user\nDescribe {caption}\n")
    with pytest.raises(AugmentError, match="version"):
        load_template(str(path))
    path.write_text("# version: x1\n### user\nDescribe the picture\n")
    with pytest.raises(AugmentError, match="must contain {caption}"):
        load_template(str(path))
    with pytest.raises(AugmentError, match="available: descriptions_v1"):
        load_template("descriptions_v0")


def test_cache_key_covers_every_input():
    template = load_template()
    identity = ModelIdentity("smollm2-135m", "sha256:" + "0" * 64, "127.0.0.1:11434")
    config = AugmentConfig()
    key = cache_key("A dog runs .", identity, template, config)
    assert len(key) == 64 and key == cache_key("A dog runs .", identity, template, AugmentConfig())
    variants = [
        cache_key("A dog runs  .", identity, template, config),
        cache_key("A dog runs .", ModelIdentity("other", identity.digest, identity.host), template, config),
        cache_key("A dog runs .", ModelIdentity(identity.name, "sha256:" + "1" * 64, identity.host), template, config),
        cache_key("A dog runs .", identity, template, AugmentConfig(k=2)),
        cache_key("A dog runs .", identity, template, AugmentConfig(temperature=0.9)),
        cache_key("A dog runs .", identity, template, AugmentConfig(rules=ValidationRules(min_words=5))),
    ]
    assert len({key, *variants}) == 1 + len(variants)
    # the host is where the model runs, not what it is
    assert key == cache_key("A dog runs .", ModelIdentity(identity.name, identity.digest, "other:1"), template, config)
    # pinned: the committed cache (data/augmentations/) is only reused while the key of the default
    # configuration stays this value; a change here means every caption would be augmented again
    assert key == "2f0d146c1c620cca1430a835b0b6df2afa9ab113457a4afad10a3f69135afaad"


# --------------------------------------------------------------------------- cache files
def _record(key: str, caption: str, status: str = "ok", model: str = "m", descriptions=None) -> dict:
    return {"key": key, "caption": caption, "status": status, "model": model, "digest": "sha256:d",
            "template": "descriptions_v1", "k": 3,
            "descriptions": descriptions if descriptions is not None else [f"{caption} one", f"{caption} two", f"{caption} three"]}


def _write(path: Path, records: list[dict], tail: bytes = b"") -> None:
    path.write_bytes(b"".join((json.dumps(r) + "\n").encode() for r in records) + tail)


def test_read_records_tolerates_a_partial_tail_and_bad_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b")], tail=b'{"key": "c", "capt')
    records, report = read_records(path)
    assert [r["key"] for r in records] == ["a", "b"]
    assert report.partial_tail == len(b'{"key": "c", "capt') and report.lines == 2
    assert "unfinished" in report.problems()[0]
    path.write_bytes(path.read_bytes().replace(b'{"key": "c", "capt', b'not json\n') + (json.dumps(_record("a", "cap a2")) + "\n").encode())
    records, report = read_records(path)
    assert report.bad_lines == [3] and report.duplicates == 1 and report.partial_tail == 0
    assert {r["key"]: r["caption"] for r in records} == {"a": "cap a2", "b": "cap b"}  # the later record wins


def test_load_augmentations(tmp_path):
    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b", status="failed", descriptions=["only one"])],
           tail=b'{"key":')
    with pytest.warns(UserWarning, match="unfinished"):
        loaded = load_augmentations(path)
    assert loaded == {"cap a": ["cap a one", "cap a two", "cap a three"]}
    with pytest.warns(UserWarning):
        assert load_augmentations(path, include_failed=True)["cap b"] == ["only one"]
    _write(path, [_record("a", "cap a"), _record("x", "cap x", model="other")])
    with pytest.raises(ValueError, match="mixes configurations"):
        load_augmentations(path)
    assert list(load_augmentations(path, model="other")) == ["cap x"]
    with pytest.raises(FileNotFoundError, match="python -m osgha_lite augment"):
        load_augmentations(tmp_path / "missing.jsonl")


def test_cache_repair_drops_only_the_partial_tail(tmp_path):
    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a")], tail=b'{"key": "b"')
    good = path.read_bytes()[: -len(b'{"key": "b"')]
    with pytest.raises(CacheAccessError, match=r"repairing needs the cache's lock \(.*c\.lock\)"):
        AugmentationCache(path).repair()  # a reader without the lock never cuts the file
    assert path.read_bytes().endswith(b'{"key": "b"')
    with CacheLock(path) as lock:
        cache = AugmentationCache(path, lock=lock)
        assert cache.repair() == len(b'{"key": "b"')
        assert path.read_bytes() == good
        cache.append(_record("c", "cap c"))
    assert not (tmp_path / "c.lock").exists()
    records, report = read_records(path)
    assert [r["key"] for r in records] == ["a", "c"] and report.problems() == []


# --------------------------------------------------------------------------- against the real model
def _config(standin, **overrides) -> AugmentConfig:  # noqa: F811
    settings = {"host": standin.host, "model": MODEL, "concurrency": 4, "timeout": 300, **overrides}
    return AugmentConfig(**settings)


@pytest.fixture(scope="module")
def augmented(standin, tmp_path_factory):  # noqa: F811
    """Four captions augmented end to end through the ollama client."""
    path = tmp_path_factory.mktemp("aug") / "demo.jsonl"
    summary = augment_captions(CAPTIONS, path, _config(standin), progress=False)
    return path, summary


def test_end_to_end_with_the_real_model(augmented, standin):  # noqa: F811
    path, summary = augmented
    assert summary.requested == 4 and summary.ok + summary.failed == 4 and summary.ok >= 2
    records, report = read_records(path)
    assert report.lines == 4 and report.problems() == []
    for record in records:
        assert record["model"] == MODEL and record["template"] == "descriptions_v1"
        assert record["digest"].startswith("sha256:") and len(record["digest"]) == 71
        assert 1 <= record["attempts"] <= 3 and len(record["seeds"]) == record["attempts"]
        if record["status"] == "ok":
            assert len(record["descriptions"]) == 3
            for i, text in enumerate(record["descriptions"]):
                assert check_description(text, record["caption"], accepted=record["descriptions"][:i]) is None
        else:
            assert record["reason"] and record["rejected"]
    loaded = load_augmentations(path)
    assert set(loaded) == {r["caption"] for r in records if r["status"] == "ok"}
    meta = json.loads(path.with_name("demo.meta.json").read_text())
    assert meta["records"] == 4 and meta["ok"] == summary.ok and meta["runs"][-1]["status"] == "completed"
    assert meta["settings"]["template"] == "descriptions_v1" and meta["settings"]["k"] == 3

    before = path.read_bytes()
    again = augment_captions(CAPTIONS, path, _config(standin), progress=False)
    assert again.cached == 4 and again.ok + again.failed == 0
    assert path.read_bytes() == before


def test_resume_after_a_truncated_last_line(augmented, standin, tmp_path):  # noqa: F811
    path = tmp_path / "demo.jsonl"
    partial = b'{"caption": "A cat sleeps on a sofa .", "key": "0a1b'
    path.write_bytes(augmented[0].read_bytes() + partial)
    with pytest.warns(UserWarning, match="unfinished"):
        assert len(load_augmentations(path)) == augmented[1].ok
    summary = augment_captions(CAPTIONS + ["A cat sleeps on a sofa ."], path, _config(standin), progress=False)
    assert summary.repaired_bytes == len(partial) and summary.cached == 4 and summary.ok + summary.failed == 1
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    keys = [json.loads(line)["key"] for line in lines[:-1]]
    assert len(keys) == 5 == len(set(keys))


def test_broken_replies_are_retried_then_reported(standin, tmp_path):  # noqa: F811
    path = tmp_path / "broken.jsonl"
    config = _config(standin, num_predict=6, max_attempts=2)  # replies cut off long before 3 items
    summary = augment_captions(CAPTIONS[:2], path, config, progress=False)
    assert summary.failed == 2 and summary.ok == 0
    assert summary.failure_reasons == {"0 of 3 valid descriptions after 2 attempts": 2}
    records, _ = read_records(path)
    for record in records:
        assert record["status"] == "failed" and record["attempts"] == 2
        assert len(set(record["seeds"])) == 2  # each retry draws with another seed
        reasons = {r["reason"] for r in record["rejected"]}
        assert "cut off by num_predict" in reasons or any(r.startswith("too short") for r in reasons)
    assert load_augmentations(path) == {}
    meta = json.loads(path.with_name("broken.meta.json").read_text())
    assert meta["failed"] == 2 and sum(meta["configs"][0]["failure_reasons"].values()) == 2


def test_missing_model_names_the_fix(standin, tmp_path):  # noqa: F811
    path = tmp_path / "m.jsonl"
    with pytest.raises(ModelNotFound, match=r"(?s)ollama pull llama3\.2:3b.*ollama create smollm2-135m"):
        augment_captions(CAPTIONS[:1], path, _config(standin, model="llama3.2:3b"), progress=False)
    assert not path.exists()


# --------------------------------------------------------------------------- the command line
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "osgha_lite", "augment", *args, "--no-progress"],
        cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kwargs,
    )


def test_server_down_raises_before_touching_the_cache(tmp_path):
    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a")], tail=b'{"key": "half')
    before = path.read_bytes()
    config = AugmentConfig(host=f"127.0.0.1:{_free_port()}", backoff=0.1)
    with pytest.raises(OllamaUnavailable, match="ollama serve"):
        augment_captions(CAPTIONS, path, config, progress=False)
    assert path.read_bytes() == before


def test_cli_server_down_exits_nonzero_and_leaves_the_cache(data_env, tmp_path):
    path = tmp_path / "flickr8k.jsonl"
    _write(path, [_record("a", "cap a")], tail=b'{"key": "half')
    before = path.read_bytes()
    proc = _cli("--dataset", "flickr8k", "--split", "train", "--out", str(path),
                env={"OLLAMA_HOST": f"127.0.0.1:{_free_port()}"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "cannot reach an Ollama server" in err
    assert "ollama serve" in err and "python -m tools.ollama_standin --model" in err
    assert "was not changed" in err
    assert path.read_bytes() == before  # not even the partial tail was repaired
    assert not path.with_name("flickr8k.meta.json").exists()


def test_cli_missing_model_exits_nonzero(data_env, standin, tmp_path):  # noqa: F811
    path = tmp_path / "flickr8k.jsonl"
    proc = _cli("--dataset", "flickr8k", "--split", "train", "--out", str(path), "--model", "no-such-model",
                env={"OLLAMA_HOST": standin.host})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "ollama pull no-such-model" in err
    assert not path.exists()


def test_cli_killed_mid_run_loses_and_duplicates_nothing(data_env, standin, tmp_path):  # noqa: F811
    from osgha_lite.llm.augment import select_captions

    captions = select_captions("flickr8k", "train")
    assert len(set(captions)) >= 8
    path = tmp_path / "flickr8k.jsonl"
    args = ("--dataset", "flickr8k", "--split", "train", "--out", str(path), "--concurrency", "1",
            "--num-predict", "40", "--max-attempts", "1")
    proc = _cli(*args, env={"OLLAMA_HOST": standin.host})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_records, report = read_records(path)
    assert 2 <= len(killed_records) < len(set(captions)) and report.bad_lines == []

    proc = _cli(*args, env={"OLLAMA_HOST": standin.host})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{len(killed_records)} already cached" in out
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len({r["key"] for r in lines}) == len(set(captions))
    assert {r["caption"] for r in lines} == set(captions)
    for record in killed_records:  # what was written before the kill is kept as it was
        assert record in lines


def test_cli_reports_failures(data_env, standin, tmp_path):  # noqa: F811
    path = tmp_path / "flickr8k.jsonl"
    proc = _cli("--dataset", "flickr8k", "--split", "test", "--out", str(path), "--num-predict", "5",
                "--max-attempts", "2", env={"OLLAMA_HOST": standin.host})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "0 augmented, 2 failed" in out and "failed: 2 x 0 of 3 valid descriptions after 2 attempts" in out


def test_per_image_replaces_failed_captions_with_the_images_next_ones(data_env, tmp_path, monkeypatch):
    """`--per-image 1`: when an image's first caption fails, its second is asked for, and so on."""
    from osgha_lite.llm import augment
    from osgha_lite.llm.augment import AugmentConfig, RunSummary, failed_captions, select_captions
    from osgha_lite.data import load_dataset

    data = load_dataset("flickr8k", "train", skip_missing=True)
    by_image = {}
    for caption, image in zip(data.captions, data.text_to_image.tolist()):
        by_image.setdefault(image, []).append(caption)
    first = [captions[0] for captions in by_image.values()]
    assert select_captions("flickr8k", "train", per_image=1) == first
    failing = {first[0], by_image[0][1]} if len(by_image[0]) > 2 else {first[0]}
    chosen = select_captions("flickr8k", "train", per_image=1, failed=failing)
    assert chosen[:len(failing) + 1] == by_image[0][:len(failing) + 1]
    assert chosen[len(failing) + 1:] == first[1:]

    path = tmp_path / "flickr8k.jsonl"
    config = AugmentConfig()
    asked = []

    def fake_augment(captions, cache_path, config, **kwargs):
        """Record every caption as failed when it is the first or second of image 0, else as ok."""
        new = [c for c in dict.fromkeys(captions) if c not in asked]
        asked.extend(new)
        with open(cache_path, "a", encoding="utf-8") as handle:
            for caption in new:
                status = "failed" if caption in failing else "ok"
                handle.write(json.dumps({"key": caption, "caption": caption, "status": status, "descriptions": [],
                                         "model": config.model, "k": config.k}) + "\n")
        return RunSummary(requested=len(set(captions)), ok=sum(c not in failing for c in new),
                          failed=sum(c in failing for c in new), seconds=1.0)

    monkeypatch.setattr(augment, "augment_captions", fake_augment)
    assert augment.main(["--dataset", "flickr8k", "--split", "train", "--per-image", "1", "--out", str(path)]) == 0
    assert failed_captions(path, config) == failing
    assert set(asked) == set(first) | set(by_image[0][:len(failing) + 1])
    # Image 0 ends with one covered caption, like every other image.
    ok = {c for c in asked if c not in failing}
    assert all(any(c in ok for c in captions) for captions in by_image.values())


def test_image_caption_groups_join_each_images_first_captions(data_env):
    from osgha_lite.llm.augment import image_caption_groups, join_image_captions, main, select_image_groups
    from osgha_lite.data import load_dataset

    data = load_dataset("flickr8k", "train", skip_missing=True)
    groups = image_caption_groups(data, 2)
    assert len(groups) == len(data.image_paths)
    first_image = [c for c, i in zip(data.captions, data.text_to_image.tolist()) if i == 0]
    assert groups[0] == join_image_captions(first_image, 2) == " | ".join(
        c.replace(" .", ".")[:1].upper() + c.replace(" .", ".")[1:] for c in first_image[:2])
    assert select_image_groups("flickr8k", "train", 2, limit=1) == groups[:1]
    assert main(["--dataset", "flickr8k", "--split", "train", "--join-per-image", "2", "--per-image", "1"]) == 1


def test_vision_template_attaches_the_image(data_env):
    from osgha_lite.llm.augment import AugmentError, load_template, main, select_image_files
    from osgha_lite.data import data_root

    template = load_template("perspectives_vlm_v1")
    assert template.vision and not load_template("perspectives_v1").vision
    files = select_image_files("flickr8k", "train")
    assert files and all((data_root() / f).is_file() for f in files)
    messages = template.messages("", 3, image=data_root() / files[0])
    assert messages[-1]["images"] == [str(data_root() / files[0])]
    assert "{image}" not in messages[-1]["content"] and "3 sentences" in messages[-1]["content"]
    with pytest.raises(AugmentError, match="image=PATH"):
        template.messages("", 3)
    assert main(["--dataset", "flickr8k", "--split", "train", "--vision", "--template", "perspectives_v1"]) == 1


def test_vision_records_check_descriptions_without_the_path(data_env, tmp_path):
    """A vision reply is validated without the off-topic test (there is no caption to share words with)."""
    from types import SimpleNamespace

    from osgha_lite.llm.augment import AugmentConfig, ModelIdentity, augment_caption, load_template, select_image_files

    seen = []

    class Client:
        def chat(self, model, messages, options, **kwargs):
            seen.append(messages)
            reply = "1. A sunny park full of people.\n2. Tall trees stand behind a lawn.\n3. A child holds a red kite."
            return SimpleNamespace(message=SimpleNamespace(content=reply), eval_count=20, done_reason="stop")

    image = select_image_files("flickr8k", "train")[0]
    config = AugmentConfig(template="perspectives_vlm_v1", k=3)
    record = augment_caption(Client(), image, "key", config, load_template("perspectives_vlm_v1"),
                             ModelIdentity("llava", "sha256:0", "host"))
    assert record["status"] == "ok" and len(record["descriptions"]) == 3, record
    assert seen[0][-1]["images"][0].endswith(image)


# --------------------------------------------------------------------------- compressed caches
def _lines(records: list[dict]) -> bytes:
    return b"".join((json.dumps(r) + "\n").encode() for r in records)


def test_cache_paths_name_both_parts_from_either_name(tmp_path):
    from osgha_lite.llm.augment import cache_exists, cache_paths

    log, packed = tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz"
    assert cache_paths(log) == cache_paths(packed) == cache_paths(str(log)) == (log, packed)
    assert not cache_exists(log) and not cache_exists(packed)
    log.write_bytes(b"")
    assert cache_exists(log) and cache_exists(packed)
    log.unlink()
    packed.write_bytes(b"")
    assert cache_exists(log)


def test_compress_cache_merges_records_and_gives_the_same_bytes(tmp_path):
    import gzip

    from osgha_lite.llm.augment import compress_cache

    records = [_record("a", "cap a"), _record("b", "cap b"), _record("a", "cap a2"), _record("c", "cap ç")]
    first, second = tmp_path / "one" / "c.jsonl", tmp_path / "two" / "other.jsonl"
    for path in (first, second):
        path.parent.mkdir()
        _write(path, records)
    expected, _ = read_records(first)
    packed = compress_cache(first)
    assert packed == first.with_name("c.jsonl.gz") and not first.exists()
    assert packed.read_bytes() == compress_cache(second).read_bytes()  # no name or time stamp in the bytes
    assert packed.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime field
    body = gzip.decompress(packed.read_bytes()).decode("utf-8").splitlines()
    # one line per key, in order of first appearance, the later record's content, keys sorted
    assert [json.loads(line)["caption"] for line in body] == ["cap a2", "cap b", "cap ç"]
    assert body[0] == json.dumps(_record("a", "cap a2"), ensure_ascii=False, sort_keys=True)
    records_back, report = read_records(first)
    assert records_back == expected and report.problems() == [] and report.records == 3
    before = packed.read_bytes()
    assert compress_cache(packed).read_bytes() == before  # compressing a compressed cache changes nothing


def test_plain_log_wins_over_the_compressed_part(tmp_path):
    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b")])
    compress_cache(path)
    _write(path, [_record("a", "cap a new"), _record("c", "cap c")])
    records, report = read_records(path)
    assert [(r["key"], r["caption"]) for r in records] == [("a", "cap a new"), ("b", "cap b"), ("c", "cap c")]
    assert report.path == path and report.lines == 2 and report.records == 3  # the report is the log's
    assert load_augmentations(path)["cap a new"] == ["cap a new one", "cap a new two", "cap a new three"]
    assert "cap a" not in load_augmentations(path)
    # compressing again folds the log in, keeping the log's record
    packed = compress_cache(path)
    assert not path.exists()
    assert [(r["key"], r["caption"]) for r in read_records(packed)[0]] == \
        [("a", "cap a new"), ("b", "cap b"), ("c", "cap c")]


def test_compress_cache_refuses_unfinished_invalid_or_empty_caches(tmp_path):
    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    with pytest.raises(ValueError, match="no records to compress"):
        compress_cache(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="no records to compress"):
        compress_cache(path)
    _write(path, [_record("a", "cap a")], tail=b'{"key": "b", "capt')
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"c\.jsonl: repair the cache before compressing it: .*unfinished"):
        compress_cache(path)
    assert path.read_bytes() == before and not path.with_name("c.jsonl.gz").exists()
    _write(path, [_record("a", "cap a")], tail=b"not json\n")
    with pytest.raises(ValueError, match="not valid JSON records"):
        compress_cache(path)
    assert path.read_bytes() == _lines([_record("a", "cap a")]) + b"not json\n"
    assert not path.with_name("c.jsonl.gz").exists()


def test_damaged_compressed_part_is_an_error_naming_the_file(tmp_path):
    import gzip

    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    _write(path, [_record(k, f"cap {k}") for k in "abc"])
    packed = compress_cache(path)
    good = packed.read_bytes()
    damaged = {
        "truncated": good[:-12],
        "not gzip": b"this is not gzip data\n",
        "unfinished line": gzip.compress(_lines([_record("a", "cap a")]) + b'{"key": "b"', mtime=0),
        "invalid line": gzip.compress(_lines([_record("a", "cap a")]) + b"not json\n", mtime=0),
    }
    for name, data in damaged.items():
        packed.write_bytes(data)
        with pytest.raises(ValueError, match=r"c\.jsonl\.gz: ") as raised:
            read_records(path)
        assert str(packed) in str(raised.value), name
        with pytest.raises(ValueError, match=r"c\.jsonl\.gz"):
            load_augmentations(path)
        with pytest.raises(ValueError, match=r"c\.jsonl\.gz"):
            AugmentationCache(path)


def test_corrupted_compressed_bytes_are_an_error_naming_the_file(tmp_path):
    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    _write(path, [_record(k, f"cap {k}") for k in "abc"])
    packed = compress_cache(path)
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte inside the deflate stream
    packed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c\.jsonl\.gz"):
        read_records(path)


def test_load_augmentations_reads_a_cache_that_is_only_compressed(tmp_path):
    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b", status="failed", descriptions=["only one"])])
    expected = load_augmentations(path)
    compress_cache(path)
    assert not path.exists() and path.with_name("c.jsonl.gz").is_file()
    assert load_augmentations(path) == expected == {"cap a": ["cap a one", "cap a two", "cap a three"]}
    assert load_augmentations(path.with_name("c.jsonl.gz")) == expected
    assert load_augmentations(path, include_failed=True)["cap b"] == ["only one"]
    path.with_name("c.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"plain or \.gz"):
        load_augmentations(path)


def test_cache_appends_after_a_compressed_part(tmp_path):
    from osgha_lite.llm.augment import compress_cache

    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b", status="failed")])
    packed = compress_cache(path)
    packed_bytes = packed.read_bytes()
    cache = AugmentationCache(packed)  # either name opens the same cache
    assert cache.path == path and cache.meta_path == tmp_path / "c.meta.json"
    assert cache.done_keys() == {"a", "b"} and cache.done_keys(include_failed=False) == {"a"}
    assert cache.repair() == 0
    cache.append(_record("c", "cap c"))
    assert path.read_bytes().count(b"\n") == 1 and packed.read_bytes() == packed_bytes  # only the log grows
    records, report = read_records(path)
    assert [r["key"] for r in records] == ["a", "b", "c"] and report.problems() == []
    assert AugmentationCache(path).done_keys() == {"a", "b", "c"}
    assert cache.summary()["records"] == 3 and cache.summary()["ok"] == 2


def test_cli_compress_needs_no_split_and_split_is_required_otherwise(tmp_path, capsys):
    from osgha_lite.llm import augment

    path = tmp_path / "c.jsonl"
    _write(path, [_record("a", "cap a"), _record("b", "cap b")])
    assert augment.main(["--dataset", "flickr8k", "--compress", "--out", str(path)]) == 0
    packed = path.with_name("c.jsonl.gz")
    assert not path.exists() and packed.is_file()
    assert f"{packed} ({packed.stat().st_size:,} bytes)" in capsys.readouterr().out
    assert [r["key"] for r in read_records(path)[0]] == ["a", "b"]

    empty = tmp_path / "empty.jsonl"
    assert augment.main(["--dataset", "flickr8k", "--compress", "--out", str(empty)]) == 1
    assert "no records to compress" in capsys.readouterr().err
    _write(empty, [_record("a", "cap a")], tail=b'{"key"')
    assert augment.main(["--dataset", "flickr8k", "--compress", "--out", str(empty)]) == 1
    assert "repair the cache" in capsys.readouterr().err

    assert augment.main(["--dataset", "flickr8k", "--out", str(path)]) == 1
    assert "--split is required (unless --compress)" in capsys.readouterr().err


def _adapt_profile(tmp_path) -> Path:
    path = tmp_path / "tiny-disjoint.json"
    path.write_text(json.dumps({"name": "tiny-disjoint", "extends": "lite",
                                "protocol": {"kind": "disjoint", "pretrain_images": 2, "seed": 1}}))
    return path


def test_adapt_split_follows_the_profiles_protocol(data_env, tmp_path):
    from osgha_lite.llm import augment
    from osgha_lite.profiles import load_profile
    from osgha_lite.data import load_dataset, load_profile_split

    profile = _adapt_profile(tmp_path)
    adapt = load_profile_split(load_profile(str(profile)), "adapt")
    loaded = augment._load_split("flickr8k", "adapt", str(profile))
    assert loaded.split == "adapt" and loaded.image_ids == adapt.image_ids and loaded.captions == adapt.captions
    train = load_dataset("flickr8k", "train", skip_missing=True)
    assert set(loaded.image_ids) < set(train.image_ids) and loaded.n_images == 2
    assert augment.select_captions("flickr8k", "adapt", profile=str(profile)) == adapt.captions
    first = [[c for c, i in zip(adapt.captions, adapt.text_to_image.tolist()) if i == image][0] for image in (0, 1)]
    assert augment.select_captions("flickr8k", "adapt", per_image=1, profile=str(profile)) == first
    assert augment.select_image_groups("flickr8k", "adapt", 1, profile=str(profile)) == \
        augment.image_caption_groups(adapt, 1)
    assert len(augment.select_image_files("flickr8k", "adapt", profile=str(profile))) == 2
    assert augment._load_split("flickr8k", "train").image_ids == train.image_ids  # plain splits as before


def test_adapt_split_of_another_datasets_profile_is_refused(data_env, tmp_path, capsys):
    from osgha_lite.llm import augment

    with pytest.raises(AugmentError, match=r"--split adapt: profile 'lite' is about flickr8k, not flickr30k; "
                                           r"pass --profile"):
        augment._load_split("flickr30k", "adapt")
    with pytest.raises(AugmentError, match="profile 'tiny-disjoint' is about flickr8k"):
        augment.select_captions("flickr30k", "adapt", profile=str(_adapt_profile(tmp_path)))
    path = tmp_path / "flickr30k.jsonl"
    assert augment.main(["--dataset", "flickr30k", "--split", "adapt", "--out", str(path)]) == 3
    assert "is about flickr8k, not flickr30k" in capsys.readouterr().err
    assert not path.exists()


def test_adapt_split_whose_protocol_does_not_fit_the_dataset_is_an_error(data_env, tmp_path, capsys):
    """lite keeps 4,000 pretrain images; the tiny train split has fewer: an error message, not a traceback."""
    from osgha_lite.llm import augment

    with pytest.raises(AugmentError, match=r"--split adapt with profile 'lite': pretrain_images must be between 1"):
        augment._load_split("flickr8k", "adapt")
    path = tmp_path / "flickr8k.jsonl"
    assert augment.main(["--dataset", "flickr8k", "--split", "adapt", "--out", str(path)]) == 3
    assert "pretrain_images must be between 1" in capsys.readouterr().err
    assert not path.exists()


def test_cli_adapt_split_asks_for_the_adapt_captions(data_env, tmp_path, monkeypatch):
    from osgha_lite.llm import augment
    from osgha_lite.llm.augment import RunSummary
    from osgha_lite.profiles import load_profile
    from osgha_lite.data import load_profile_split

    profile = _adapt_profile(tmp_path)
    asked = []

    def fake_augment(captions, cache_path, config, **kwargs):
        asked.append(list(captions))
        return RunSummary(requested=len(set(captions)), ok=len(set(captions)), seconds=1.0)

    monkeypatch.setattr(augment, "augment_captions", fake_augment)
    path = tmp_path / "flickr8k.jsonl"
    assert augment.main(["--dataset", "flickr8k", "--split", "adapt", "--profile", str(profile),
                         "--out", str(path)]) == 0
    assert asked == [load_profile_split(load_profile(str(profile)), "adapt").captions]
