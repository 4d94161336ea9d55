"""The Makefile's `make help`, which the README points every reader to."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.conftest import ROOT


def test_help_lists_every_target_with_its_variables_expanded() -> None:
    """The help lines are read from the Makefile's text: a `$(GRPC_RELOADS)` in one was printed
    as it is, not as the 10 it runs."""
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "$(" not in shown, shown
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    targets = {
        match.group(1)
        for path in makefiles
        for match in re.finditer(r"^([a-zA-Z_-]+):.*## ", path.read_text(), re.M)
    }
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert listed == targets
    assert re.search(
        r"^  grpc-reload-kept +gRPC calls on kept connections across \d+ ", shown, re.M
    )


DOCUMENTS = sorted(
    {
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "deploy").rglob("*.md"),
        *(ROOT / "app").rglob("*.md"),
        *(ROOT / "reports").rglob("*.md"),
    }
)
"""Every Markdown file that may show a command: the READMEs, docs/ and the reports."""
MAKE_COMMAND = re.compile(r"`(make [^`]+)`|^(?:\$ )?(make [^\n]+)$", re.MULTILINE)
"""A `make …` in a code span, or a line of a code block that is one."""


def make_words(command: str) -> list[str]:
    """A shown `make …` command's words as a shell splits them: quotes kept together, a `|` or
    a `;` apart, as the shell would run it."""
    lexer = shlex.shlex(" ".join(command.split()), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def refused_make_words(words: list[str], targets: set[str], variables: set[str]) -> list[str]:
    """The words of `make …` that make would not run as the document means: an option (make's
    own, not the target's: `make overload --hold-off` is make's unknown option), a target no
    makefile defines, a variable no makefile reads, or a shell operator."""
    return [
        word
        for word in words[1:]
        if not (
            word in targets
            or ("=" in word and word.split("=", 1)[0] in variables)
            or word in {"…", "..."}
        )
    ]


def test_every_make_command_the_documents_show_runs_as_written() -> None:
    """Each `make …` of the READMEs, docs/ and the reports names targets the makefiles define
    and variables they read, and nothing make would refuse: a run of the README's commands as
    written found `make overload --hold-off` (make: unrecognized option) in the reports."""
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    text = "\n".join(path.read_text(encoding="utf-8") for path in makefiles)
    targets = set(re.findall(r"^([a-zA-Z][\w-]*)(?: [\w -]+)?:(?!=)", text, re.MULTILINE))
    variables = set(re.findall(r"\$\(([A-Z_]+)\)", text)) | {
        name for name in re.findall(r"^([A-Z_]+) *[?:]?=", text, re.MULTILINE)
    }
    found, refused = 0, []
    for path in DOCUMENTS:
        document = path.read_text(encoding="utf-8")
        for match in MAKE_COMMAND.finditer(document):
            shown = match.group(1) or match.group(2)
            # a `\|` in a table cell is shown as `|`
            command = shown.replace("\\|", "|").split(" #", 1)[0]
            found += 1
            bad = refused_make_words(make_words(command), targets, variables)
            if bad:
                line = document.count("\n", 0, match.start()) + 1
                refused.append(f"{path.relative_to(ROOT)}:{line}: {command} ({' '.join(bad)})")
    assert found >= 50
    assert {"serve", "test", "stress", "overload", "check-models"} <= targets
    assert refused == [], "\n".join(refused)


def test_a_make_command_make_would_refuse_is_caught() -> None:
    targets, variables = {"overload", "test-python"}, {"OVERLOAD_ARGS", "PY"}
    for good in (
        'make overload OVERLOAD_ARGS="--hold-off --name x.json"',
        "make test-python PY=3.13",
    ):
        assert refused_make_words(make_words(good), targets, variables) == [], good
    for bad, words in [
        ("make overload --hold-off", ["--hold-off"]),
        ("make test-python PY=3.13|3.14", ["|", "3.14"]),
        ("make overlaod", ["overlaod"]),
        ("make overload DURATION=5", ["DURATION=5"]),
    ]:
        assert refused_make_words(make_words(bad), targets, variables) == words, bad
