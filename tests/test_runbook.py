"""docs/runbook.md against what it documents: one section per alert of the PrometheusRule, in its
order, each alert's `runbook_url` pointing at its section; every metric, label value, setting and
log message the runbook names exists in what the service exports or in its code (a runbook that
sends an operator grepping for a line the code never writes is worse than none). Each check is
also run on a misspelt copy, which it must refuse. Its PromQL queries parse (promtool)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import gunicorn.arbiter
import pytest
import yaml
from starlette.testclient import TestClient

from app.observability.metrics import CLOSED_KINDS, LOST_CAUSES, RELOAD_OUTCOMES
from tests.test_monitoring import (
    MONITORING,
    NOT_OURS,
    PROMQL_FUNCTIONS,
    PROMTOOL,
    exported_names,
    kustomize,
    load,
    server_error_statuses,
)

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/OWNER/REPO/blob/main/docs/runbook.md"
"""The base of every runbook_url in the rule file: OWNER/REPO as deploy/README.md's image name
has it; monitoring/kustomization.yaml's commented `replacements:` sets the real one."""
CADVISOR = {"container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_periods_total"}
"""The kubelet's (cAdvisor's) series the runbook reads beside the service's."""
RUNBOOK_FUNCTIONS = PROMQL_FUNCTIONS | {"count"}
LABELLED_VALUES = {
    "cause": set(LOST_CAUSES),
    "closed": set(CLOSED_KINDS),
    "outcome": set(RELOAD_OUTCOMES),
}
"""The label values the runbook may name, as app.observability.metrics defines them."""
SETTING_SOURCES = (ROOT / "app" / "settings.py", ROOT / "gunicorn.conf.py")
LOG_SOURCES = (
    *sorted((ROOT / "app").rglob("*.py")),
    ROOT / "gunicorn.conf.py",
    Path(gunicorn.arbiter.__file__),  # gunicorn's own lines: WORKER TIMEOUT, "was sent SIGKILL"
)
LOG_QUOTE = re.compile(r'`"([^"`]+)"`')
"""A log message quoted in the prose: `"…"` (… where the line has a value of its own)."""
GREP = re.compile(r"grep -F((?: -e)? '[^']+')+")
FEATURES = set(json.loads((ROOT / "models" / "delay-full.json").read_text())["profile"]["features"])
OTHER_CAPITALS = (
    {code.name for code in grpc.StatusCode}
    | {sig.name for sig in signal.Signals}
    | set(logging.getLevelNamesMapping())
    | FEATURES
    | {"OOM", "CPU", "PSI", "REST", "JSON", "HTTP", "OIP", "PID", "POD", "DIR"}
)
"""Capitalised words of the runbook that are not settings: gRPC codes, signals, log levels,
the models' inputs, and plain abbreviations."""


def alerts() -> list[dict[str, object]]:
    return [
        rule
        for group in load("prometheusrule.yaml")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    return re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)


def code_blocks(text: str, language: str = "") -> list[str]:
    return re.findall(rf"^```{language}\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def promql(text: str) -> list[str]:
    return code_blocks(text, "promql")


def series_named(expression: str) -> set[str]:
    """The series an expression reads (tests.test_monitoring.named_series, with the functions
    and keywords the runbook's queries use)."""
    without = re.sub(
        r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expression
    )
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without))
    return {w for w in words if w not in RUNBOOK_FUNCTIONS and ":" not in w}


def unknown_series(text: str, exported: set[str]) -> set[str]:
    """Series named in the runbook's PromQL, and words anywhere in it that look like the
    service's metrics (they start as one of its metric names does), that it does not export."""
    known = exported | NOT_OURS | CADVISOR
    used = set().union(*(series_named(expression) for expression in promql(text)))
    prefixes = {name.split("_")[0] + "_" for name in exported if "_" in name}
    prose = re.sub(r"[\w/.-]+\.(?:py|md|yaml|json|lua)\b", "", text)  # file names are not series
    used |= {
        word
        for word in re.findall(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b", prose)
        if any(word.startswith(prefix) for prefix in prefixes)
    }
    return used - known


def unknown_label_values(text: str) -> set[str]:
    return {
        f'{label}="{value}"'
        for label, value in re.findall(r'\b(cause|closed|outcome)="([^"]*)"', text)
        if value not in LABELLED_VALUES[label]
    }


def settings() -> set[str]:
    """Every variable app.settings and gunicorn.conf.py read, as the quoted names they use."""
    return set().union(
        *(re.findall(r'"([A-Z][A-Z0-9_]+)"', path.read_text()) for path in SETTING_SOURCES)
    )


def unknown_settings(text: str) -> set[str]:
    """Capitalised names the runbook gives that are neither settings nor OTHER_CAPITALS: every
    word with an underscore, and every inline code span that is one word (or NAME=value)."""
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b", text))
    names |= {
        span.split("=", 1)[0]
        for span in re.findall(r"`([^`\s]+)`", text)
        if re.fullmatch(r"[A-Z][A-Z0-9_]*(=\S*)?", span)
    }
    return names - settings() - OTHER_CAPITALS


def quoted_logs(text: str) -> set[str]:
    quotes = set(LOG_QUOTE.findall(text))
    for block in code_blocks(text):
        for match in GREP.finditer(block):
            quotes |= set(re.findall(r"'([^']+)'", match.group(0)))
    return quotes


def unknown_logs(text: str) -> set[str]:
    """Quoted log messages of which a piece (between the …s that stand for values) is in no
    source that logs: the service's code, or gunicorn's arbiter for gunicorn's own lines."""
    sources = "\n".join(path.read_text() for path in LOG_SOURCES)
    return {
        quote
        for quote in quoted_logs(text)
        if any(piece not in sources for piece in quote.split("…") if piece.strip())
    }


def test_every_alert_has_a_section_in_the_rule_files_order() -> None:
    names = [str(rule["alert"]) for rule in alerts()]
    sections = [h for h in headings(RUNBOOK.read_text()) if h.startswith("LatamDelay")]
    assert sections == names
    assert len(names) == 11


def test_every_alert_links_its_runbook_section() -> None:
    anchors = {anchor(h) for h in headings(RUNBOOK.read_text())}
    for rule in alerts():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        url = annotations["runbook_url"]
        assert url == f"{RUNBOOK_BASE}#{str(rule['alert']).lower()}", url
        assert url.split("#", 1)[1] in anchors, url


def test_the_runbooks_own_links_resolve() -> None:
    text = RUNBOOK.read_text()
    anchors = {anchor(h) for h in headings(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert set(links) <= anchors, set(links) - anchors
    for path in re.findall(r"\]\((\.\./[^)#]+)", text):
        assert (RUNBOOK.parent / path).exists(), path


def test_the_runbook_reads_only_series_that_exist(client: TestClient) -> None:
    text = RUNBOOK.read_text()
    exported = exported_names(client)
    assert unknown_series(text, exported) == set()
    assert unknown_label_values(text) == set()
    used = set().union(*(series_named(expression) for expression in promql(text)))
    assert {"http_requests_total", "workers_lost_total", "event_loop_lag_seconds_bucket"} <= used


def test_the_runbook_names_only_real_settings() -> None:
    text = RUNBOOK.read_text()
    assert unknown_settings(text) == set()
    assert {"MAX_IN_FLIGHT", "MAX_CONNECTIONS", "WORKERS", "MODELS_DIR"} <= settings()


def test_the_runbook_quotes_only_real_log_messages() -> None:
    text = RUNBOOK.read_text()
    quotes = quoted_logs(text)
    assert "model reload refused" in quotes
    assert any(quote.startswith("WORKER TIMEOUT") for quote in quotes)
    assert unknown_logs(text) == set()


def runbook_rules(text: str, path: Path) -> Path:
    """The runbook's PromQL queries as recording rules, for `promtool check rules` to parse."""
    rules = [
        {"record": f"runbook:query_{i}", "expr": query} for i, query in enumerate(promql(text))
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbook", "rules": rules}]}))
    return path


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus)")
def test_the_runbooks_queries_parse(tmp_path: Path) -> None:
    """Each query an operator pastes into Prometheus is valid PromQL (the checks above read its
    series names only; a query that does not parse names real series all the same)."""
    assert PROMTOOL is not None
    promtool, text = PROMTOOL, RUNBOOK.read_text()
    checked = subprocess.run(
        [promtool, "check", "rules", str(runbook_rules(text, tmp_path / "runbook.yaml"))],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(promql(text))} rules found" in checked.stdout
    broken = text.replace("(rate(http_requests_total{", "(rate((http_requests_total{", 1)
    assert broken != text
    refused = subprocess.run(
        [promtool, "check", "rules", str(runbook_rules(broken, tmp_path / "broken.yaml"))],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0


@pytest.mark.parametrize(
    ("right", "wrong", "check"),
    [
        ("workers_lost_total", "workers_lost_totl", "series"),
        ("model_last_reload_successful", "model_last_reload_sucessful", "series"),
        ('cause="crashed"', 'cause="crash"', "labels"),
        ("MAX_IN_FLIGHT", "MAX_INFLIGHT", "settings"),
        ("`WORKERS`", "`WORKER`", "settings"),
        ("model reload refused", "model reload refusd", "logs"),
        ("WORKER TIMEOUT", "WORKER TIMED OUT", "logs"),
    ],
)
def test_each_check_refuses_a_misspelt_name(
    client: TestClient, right: str, wrong: str, check: str
) -> None:
    text = RUNBOOK.read_text()
    assert right in text
    checks: dict[str, Callable[[str], set[str]]] = {
        "series": lambda t: unknown_series(t, exported_names(client)),
        "labels": unknown_label_values,
        "settings": unknown_settings,
        "logs": unknown_logs,
    }
    assert checks[check](text) == set()
    assert checks[check](text.replace(right, wrong)) != set()


def test_the_kustomization_sets_the_runbook_base_and_keeps_each_anchor(tmp_path: Path) -> None:
    """runbook-base.yaml's URL replaces the part of every runbook_url before its `#`, and is not
    applied itself (local configuration)."""
    base = yaml.safe_load((MONITORING / "runbook-base.yaml").read_text())
    assert base["data"]["url"] == RUNBOOK_BASE
    copy = Path(shutil.copytree(MONITORING, tmp_path / "monitoring"))
    elsewhere = "https://git.example.com/ops/latam-delay/-/blob/main/docs/runbook.md"
    base["data"]["url"] = elsewhere
    (copy / "runbook-base.yaml").write_text(yaml.safe_dump(base))
    built = kustomize(copy)
    assert set(built) == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert built["ConfigMap"]["metadata"]["name"] == "latam-delay-dashboard"
    rules = [
        rule
        for group in built["PrometheusRule"]["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(rules) == len(alerts())
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"{elsewhere}#{rule['alert'].lower()}"


def test_the_one_pod_grep_of_server_errors_selects_what_the_alert_counts() -> None:
    """Found by the docs audit: the 5xx section's grep took `5..`, the client's `505` too, which
    the rule leaves out."""
    (pattern,) = re.findall(
        r"grep -E '\^http_requests_total\.\*status=\"([^']*)\"'", RUNBOOK.read_text()
    )
    failure = server_error_statuses()
    statuses = [str(code) for code in range(400, 600)] + [code.name for code in grpc.StatusCode]
    for status in statuses:
        assert bool(re.fullmatch(pattern, status)) is failure.fullmatch(status), status
