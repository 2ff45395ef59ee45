"""Read an Ollama Modelfile: ``FROM``, ``PARAMETER``, ``TEMPLATE``, ``SYSTEM``, ``MESSAGE``, ``LICENSE``.

The syntax follows https://github.com/ollama/ollama/blob/main/docs/modelfile.md:
one instruction per line (case-insensitive), ``#`` comments, values either
bare, ``"quoted"`` or ``\"\"\"multi-line\"\"\"``. ``FROM`` must name a local GGUF
file (absolute, or relative to the Modelfile's folder); registry model names
need a real Ollama. ``ADAPTER`` is refused.

``TEMPLATE`` is kept and reported by ``/api/show`` but not executed (it is a Go
template): prompts are always rendered with the chat template stored in the
GGUF, which is what ``ollama create`` also derives its template from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INT_PARAMETERS = {"num_ctx", "num_predict", "top_k", "seed", "repeat_last_n", "num_keep", "num_batch", "num_thread", "num_gpu", "mirostat"}
TEXT_PARAMETERS = {"stop"}


class ModelfileError(ValueError):
    """A Modelfile that cannot be used; the message names the file and line."""


@dataclass
class Modelfile:
    path: Path
    source: str
    """The ``FROM`` value as written."""
    gguf: Path
    """The resolved GGUF file."""
    parameters: dict[str, object] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def parameters_text(self) -> str:
        """Parameters as ``/api/show`` prints them (one ``name value`` per line)."""
        lines = []
        for name, value in self.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f'{name:<30} {_quote(item) if isinstance(item, str) else item}')
        return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_instructions(text: str, where: Path) -> list[tuple[int, str, str]]:
    """``(line_number, INSTRUCTION, raw_value)`` triples, with triple-quoted values joined."""
    out: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        number = i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if '"""' in rest:
            head, _, tail = rest.partition('"""')
            if '"""' in tail:
                body = tail.split('"""', 1)[0]
            else:
                parts = [tail]
                while i < len(lines) and '"""' not in lines[i]:
                    parts.append(lines[i])
                    i += 1
                if i == len(lines):
                    raise ModelfileError(f'{where}:{number}: unterminated """ block')
                parts.append(lines[i].split('"""', 1)[0])
                i += 1
                body = "\n".join(parts)
            rest = (head + body) if head.strip() else body
            out.append((number, word.upper(), "\x00" + rest))  # marks an already-unquoted value
        else:
            out.append((number, word.upper(), rest))
    return out


def _unquote(raw: str) -> str:
    if raw.startswith("\x00"):
        return raw[1:]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return raw


def parse_modelfile(path: str | Path) -> Modelfile:
    """Parse ``path``; raise :class:`ModelfileError` (file:line: what to fix) on problems."""
    path = Path(path)
    if not path.is_file():
        raise ModelfileError(f"{path}: Modelfile not found")
    source = gguf = None
    params: dict[str, object] = {}
    template = system = license_text = None
    messages: list[dict[str, str]] = []
    for number, word, raw in _split_instructions(path.read_text(encoding="utf-8"), path):
        where = f"{path}:{number}"
        if word == "FROM":
            source = _unquote(raw)
            candidate = Path(source).expanduser()
            if not candidate.is_absolute():
                candidate = (path.parent / candidate).resolve()
            if not candidate.is_file():
                raise ModelfileError(
                    f"{where}: FROM {source!r}: no such file ({candidate}). This server serves local GGUF files "
                    "only. For the project's SmolLM2 Modelfile run "
                    "`python -m tools.ollama_standin.gguf_path --link data/ollama` first."
                )
            gguf = candidate
        elif word == "PARAMETER":
            value = raw[1:] if raw.startswith("\x00") else raw
            name, _, val = value.strip().partition(" ")
            name, val = name.strip().lower(), _unquote(val.strip())
            if not name or val == "":
                raise ModelfileError(f"{where}: PARAMETER needs a name and a value")
            if name in TEXT_PARAMETERS:
                params.setdefault(name, [])
                params[name].append(val)  # type: ignore[union-attr]
            else:
                try:
                    params[name] = int(val) if name in INT_PARAMETERS else float(val)
                except ValueError:
                    if val.lower() in ("true", "false"):
                        params[name] = val.lower() == "true"
                    else:
                        raise ModelfileError(f"{where}: PARAMETER {name}: {val!r} is not a number") from None
        elif word == "TEMPLATE":
            template = _unquote(raw)
        elif word == "SYSTEM":
            system = _unquote(raw)
        elif word == "LICENSE":
            license_text = _unquote(raw)
        elif word == "MESSAGE":
            value = raw[1:] if raw.startswith("\x00") else raw
            role, _, content = value.partition(" ")
            if role.lower() not in ("system", "user", "assistant"):
                raise ModelfileError(f"{where}: MESSAGE role must be system, user or assistant, not {role!r}")
            messages.append({"role": role.lower(), "content": _unquote(content.strip())})
        elif word == "ADAPTER":
            raise ModelfileError(f"{where}: ADAPTER is not supported by this server")
        else:
            raise ModelfileError(f"{where}: unknown instruction {word!r}")
    if gguf is None or source is None:
        raise ModelfileError(f"{path}: no FROM line")
    return Modelfile(
        path=path, source=source, gguf=gguf, parameters=params, template=template,
        system=system, license=license_text, messages=messages,
    )
