"""The prompt sent to the LLM and how its replies are read: templates, parsing and validation.

Part of the augmentation (:mod:`osgha_lite.llm.augment` describes the whole
design, all of it this project's; the paper gives neither prompt nor model).
Reading order: :class:`PromptTemplate` and :func:`load_template` (the
versioned prompt files in ``osgha_lite/llm/prompts/``), :func:`parse_descriptions`
(a reply -> items), :func:`check_description` with :class:`ValidationRules`
(which items are kept), and the joined captions of one image
(:func:`image_caption_groups`) that the perspective prompts describe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from osgha_lite.llm.reply_check import caption_as_data

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_TEMPLATE = "descriptions_v1"


# --------------------------------------------------------------------------- errors
class AugmentError(RuntimeError):
    """The augmentation cannot go on; the message says what to do."""


# --------------------------------------------------------------------------- prompt
@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt read from ``prompts/<name>.txt`` (see the file's header).

    ``sections`` is a tuple of ``(role, text)``; ``version`` comes from the
    ``# version:`` header line and ``sha256`` hashes the whole file.
    """

    name: str
    version: str
    sha256: str
    sections: tuple[tuple[str, str], ...]

    @property
    def vision(self) -> bool:
        """True when the template asks about an attached image (``{image}``) instead of a caption."""
        return "{image}" in self.sections[-1][1]

    def messages(self, caption: str, k: int, image: str | None = None) -> list[dict[str, Any]]:
        """Chat messages asking for ``k`` descriptions of ``caption`` (or, for a vision template,
        of the picture at ``image``, attached to the last message through Ollama's ``images`` field)."""
        out: list[dict[str, Any]] = []
        for role, text in self.sections:
            if role == "assistant":
                text = _first_items(text, k, self.name)
            text = (text.replace("{k}", str(k)).replace("{caption}", tidy_caption(caption_as_data(caption)))
                    .replace("{image}", ""))
            out.append({"role": role, "content": text.strip()})
        if self.vision:
            if image is None:
                raise AugmentError(f"prompt template {self.name} asks about an image; pass image=PATH")
            out[-1]["images"] = [str(image)]
        return out


def _first_items(text: str, k: int, name: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < k:
        raise AugmentError(f"prompt template {name}: its example answer has {len(lines)} items, fewer than k={k}")
    return "\n".join(lines[:k])


def load_template(name_or_path: str = DEFAULT_TEMPLATE) -> PromptTemplate:
    """Read a prompt template by name (``descriptions_v1``) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")))
        raise AugmentError(f"prompt template {name_or_path!r} not found ({path}); available: {available}")
    raw = path.read_text(encoding="utf-8")
    version = None
    sections: list[tuple[str, list[str]]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        header = re.match(r"^###\s*(system|user|assistant)\s*$", line.strip(), re.IGNORECASE)
        if header:
            sections.append((header.group(1).lower(), []))
        elif sections:
            sections[-1][1].append(line)
        elif line.startswith("#"):
            found = re.match(r"^#\s*version:\s*(\S+)", line)
            if found:
                version = found.group(1)
        elif line.strip():
            raise AugmentError(f"{path}:{number}: text before the first '### system|user|assistant' section")
    if not version:
        raise AugmentError(f"{path}: missing the '# version: NAME' header line")
    if not sections or sections[-1][0] != "user":
        raise AugmentError(f"{path}: the last section must be '### user' (the one holding {{caption}})")
    last = "\n".join(sections[-1][1])
    if "{caption}" not in last and "{image}" not in last:
        raise AugmentError(f"{path}: the last '### user' section must contain {{caption}} (or {{image}} for a "
                           f"vision template)")
    return PromptTemplate(
        name=path.stem,
        version=version,
        sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        sections=tuple((role, "\n".join(lines).strip()) for role, lines in sections),
    )


def tidy_caption(caption: str) -> str:
    """The caption as shown to the LLM: single spaces, no space before punctuation,
    first letter upper case (``"a dog runs ."`` -> ``"A dog runs."``). Keys and
    records keep the caption exactly as given."""
    text = re.sub(r"\s+", " ", caption).strip()
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- parsing
_ITEM = re.compile(r"^(?:\(?\d{1,2}\s*[.):]|[-*•·–]|#{1,3}\s*\d{1,2}[.):]?)\s*(?P<body>.*\S)?\s*$")
_LABEL = re.compile(r"^(?:description|caption|option|version|sentence|alternative)\s*\d*\s*[:.\-–]\s*", re.IGNORECASE)
_QUOTED = re.compile(r"^[\"“‘'«`](.*?)[\"”’'»`]([.!?]?)$")


def _clean_item(text: str) -> str:
    text = text.replace("**", "").replace("__", "").strip()
    text = _LABEL.sub("", text).strip()
    quoted = _QUOTED.match(text)
    if quoted:
        text = quoted.group(1).strip() + quoted.group(2)
    return re.sub(r"\s+", " ", text).strip()


def parse_descriptions(reply: str) -> list[str]:
    """Split an LLM reply into items.

    * Lines starting with a list marker (``1.``, ``2)``, ``(3)``, ``4:``, ``-``,
      ``*``, ``•``) start an item; a following line without a marker continues
      that item when the item does not yet end a sentence.
    * Lines before the first marker, and separate lines after the list, are
      not items (preambles such as ``Here are three descriptions:``).
    * A reply without any marker gives one item per non-empty line.

    Items are cleaned of Markdown emphasis, surrounding quotes and labels such as
    ``Description 2:``.
    """
    items: list[str] = []
    loose: list[str] = []
    current: int | None = None
    for line in reply.splitlines():
        stripped = line.strip()
        if not stripped:
            current = None
            continue
        marker = _ITEM.match(stripped)
        if marker:
            items.append(marker.group("body") or "")
            current = len(items) - 1
        elif current is not None and not re.search(r"[.!?][\"')\]]*$", items[current]):
            items[current] = f"{items[current]} {stripped}"
        else:
            current = None
            loose.append(stripped)
    if not items:
        items = loose
    return [_clean_item(item) for item in items]


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationRules:
    """Bounds an LLM description must satisfy (part of the cache key)."""

    min_words: int = 4
    max_words: int = 40
    min_shared_words: int = 1
    """Content words (stemmed, stop words removed) shared with the caption; 0 disables the check."""


_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|great|here(?:'s| is| are)|i (?:can|cannot|can't|will|would|am|'m|have|hope))\b"
    r"|\bas an ai\b|\blanguage model\b|\bi'm sorry\b|\bi am sorry\b|\bi cannot\b|\bi can't\b|\bhope this helps\b"
    r"|\blet me know\b|\bfeel free\b",
    re.IGNORECASE,
)
_TASK_TALK = re.compile(
    r"\b(?:captions?|descriptions?|describ(?:e|es|ed|ing)\s+(?:the|this)\s+(?:image|picture|scene)|rewrit\w*|rephras\w*"
    r"|paraphras\w*|synonyms?|sentences?|the prompt|the original)\b",
    re.IGNORECASE,
)
_STOP_WORDS = frozenset(
    """a an the and or but if of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will just don should now is are
    was were be been being have has had having do does did doing it its it's this that these those i me my we our you
    your he him his she her they them their what which who whom while as until one two three four five six seven eight
    nine ten near next side front back top very also just there's is being""".split()
)


def normalize_text(text: str) -> str:
    """Lower case, letters and digits only, single spaces (for copy/duplicate checks)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _stem(word: str) -> str:
    for suffix in ("ers", "er", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stemmed words of ``text`` minus English stop words."""
    return {_stem(w) for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP_WORDS and len(w) > 1}


def check_description(
    text: str,
    caption: str,
    rules: ValidationRules = ValidationRules(),
    accepted: Sequence[str] = (),
    cut_off: bool = False,
) -> str | None:
    """``None`` when ``text`` is a valid description of ``caption``, else the reason it is not.

    ``accepted`` are the descriptions already kept for this caption (duplicates are
    rejected); ``cut_off`` marks the last item of a reply stopped by ``num_predict``.
    """
    if not text.strip():
        return "empty"
    if cut_off:
        return "cut off by num_predict"
    if _CHATTER.search(text):
        return "chatter"
    if _TASK_TALK.search(text):
        return "talks about the task instead of the picture"
    n_words = len(text.split())
    if n_words < rules.min_words:
        return f"too short ({n_words} words < {rules.min_words})"
    if n_words > rules.max_words:
        return f"too long ({n_words} words > {rules.max_words})"
    normalized = normalize_text(text)
    if normalized == normalize_text(caption):
        return "copy of the caption"
    if any(normalized == normalize_text(other) for other in accepted):
        return "duplicate"
    if rules.min_shared_words:
        anchor = content_words(caption)
        if anchor and len(anchor & content_words(text)) < rules.min_shared_words:
            return "off-topic (shares no content word with the caption)"
    return None


# --------------------------------------------------------------------------- captions of one image
IMAGE_GROUP_SEPARATOR = " | "


def join_image_captions(captions: Sequence[str], n: int) -> str:
    """The first ``n`` captions of one image, tidied and joined with ``" | "``: the input
    text of a per-image prompt such as ``perspectives_v1`` (and the cache key's caption)."""
    return IMAGE_GROUP_SEPARATOR.join(tidy_caption(c) for c in list(captions)[:n])


def image_caption_groups(data, n: int) -> list[str]:
    """One :func:`join_image_captions` text per image of a loaded split, in image order."""
    per_image: list[list[str]] = [[] for _ in range(len(data.image_paths))]
    for caption, image in zip(data.captions, data.text_to_image.tolist()):
        per_image[image].append(caption)
    return [join_image_captions(captions, n) for captions in per_image]
