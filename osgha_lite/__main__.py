"""One command for the whole project: ``python -m osgha_lite <command>`` (the console script ``osgha``).

========  ==========================================================  ===============================
command   what it does                                                code
========  ==========================================================  ===============================
run       run the numbered notebooks (every result and figure)        :mod:`osgha_lite.pipeline.runner`
augment   ask an LLM for descriptions of captions (cached)            :mod:`osgha_lite.llm.augment`
evaluate  evaluate a profile's trained methods on another dataset     :mod:`osgha_lite.apps.evaluate`
search    search a folder of images by text, captions by image        :mod:`osgha_lite.apps.search`
manifest  check results, figures and tables against their manifest    :mod:`osgha_lite.pipeline.manifest`
envcheck  check the environment; ``--fingerprint``: the CPU kernels   :mod:`osgha_lite.pipeline.envcheck`
book      build the companion website from executed notebooks         ``book/build_site.py``
========  ==========================================================  ===============================

``python -m osgha_lite <command> --help`` shows a command's options and an
example. Nothing is imported before a command is chosen, so ``--help`` is
quick. The old forms ``python -m osgha_lite.runner`` (and ``.augment``,
``.evaluate``, ``.search``, ``.manifest``, ``.envcheck``) still work: they
print one line naming the new form and run it (:func:`old_form`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence

PROG = "python -m osgha_lite"


def _run(argv: list[str]) -> int:
    from osgha_lite.pipeline import runner

    return runner.main(argv)


def _augment(argv: list[str]) -> int:
    from osgha_lite.llm import augment

    return augment.main(argv)


def _evaluate(argv: list[str]) -> int:
    from osgha_lite.runtime import restart_with_portable_kernels

    restart_with_portable_kernels("osgha_lite", ["evaluate", *argv])  # the same features (and checkpoint keys)
    from osgha_lite.apps import evaluate

    return evaluate.main(argv)


def _search(argv: list[str]) -> int:
    from osgha_lite.runtime import restart_with_portable_kernels

    restart_with_portable_kernels("osgha_lite", ["search", *argv])  # the same features (and checkpoint keys)
    from osgha_lite.apps import search

    return search.main(argv)


def _manifest(argv: list[str]) -> int:
    from osgha_lite.pipeline import manifest

    return manifest.main(argv)


def _envcheck(argv: list[str]) -> int:
    from osgha_lite.pipeline import envcheck

    return envcheck.main(argv)


def _book(argv: list[str]) -> int:
    from osgha_lite.paths import PROJECT_ROOT

    script = PROJECT_ROOT / "book" / "build_site.py"
    if not script.is_file():
        print(f"error: {PROG} book needs a clone of the repository ({script} is missing)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *argv])


#: ``name -> (one-line summary, runner)``; each runner takes the arguments after the command.
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "run": ("run the numbered notebooks with Papermill: every result and figure", _run),
    "augment": ("ask an LLM (Ollama) for descriptions of a dataset's captions, cached", _augment),
    "evaluate": ("evaluate a profile's trained methods on another dataset", _evaluate),
    "search": ("search a folder of images by text, and captions by image", _search),
    "manifest": ("check results, figures and tables against their manifest", _manifest),
    "envcheck": ("check the environment (--fingerprint: the CPU kernels' digests)", _envcheck),
    "book": ("build the companion website from the executed notebooks", _book),
}

EXAMPLES = f"""examples:
  {PROG} envcheck                       # OK/FAIL for every dependency, model and data folder
  {PROG} run --profile lite             # every notebook: results/ and figures/
  {PROG} manifest check --profile lite  # the committed artifacts against their manifest
  {PROG} evaluate --dataset flickr8k-heldout --split test
  {PROG} search query "a dog runs on the beach" --k 5
  {PROG} <command> --help               # a command's options, with an example"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]   (or: osgha <command> [options])", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    return "\n".join([*lines, "", EXAMPLES])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; one of: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    return COMMANDS[command][1](rest)


#: The old module of each command: ``python -m osgha_lite.<module>`` runs ``python -m osgha_lite <command>``.
OLD_FORMS = {"runner": "run", "augment": "augment", "evaluate": "evaluate", "search": "search",
             "manifest": "manifest", "envcheck": "envcheck"}


def old_form(module: str, argv: Sequence[str] | None = None) -> int:
    """Run the command that ``python -m osgha_lite.<module>`` used to run, after one line on stderr that
    names the new form."""
    command = OLD_FORMS[module]
    print(f"note: `python -m osgha_lite.{module}` is now `{PROG} {command}` (or `osgha {command}`)",
          file=sys.stderr)
    return main([command, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
