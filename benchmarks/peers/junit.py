"""The outcome of each test in a pytest JUnit XML file: how the real-server suites fared
under Granian (`make granian-reliability`), for the peers report."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    name: str
    """file::test[param], as pytest names it"""
    outcome: str
    """passed, failed, error or skipped"""
    message: str
    """The failure's first line, shortened; empty when it passed."""


def outcomes(path: Path, width: int = 160) -> list[CaseOutcome]:
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = f"{module}.py::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            problem = case.find(tag)
            if problem is not None:
                outcome = "failed" if tag == "failure" else tag
                text = (problem.get("message") or problem.text or "").strip()
                message = " ".join(text.split())[:width]
                break
        found.append(CaseOutcome(name, outcome, message))
    return found
