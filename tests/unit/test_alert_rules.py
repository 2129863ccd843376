"""ops/prometheus/alerts.yml: valid for Prometheus, each alert proven by promtool's unit tests
(alerts_test.yml) to fire when it should and not when it should not, on exported metrics only,
and loaded by the shipped Prometheus config.

promtool comes from Debian's `prometheus` package (`.ci/run` installs it). Without it the
promtool tests skip on a developer's machine and fail in CI (`CI` set), where they must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_ops_files import defined_metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: CI must run the alert rule tests (.ci/run installs it)")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI runs these tests")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_both_firing_and_quiet() -> None:
    names = {rule["alert"] for rule in rules()}
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert names == fires, f"alerts never shown firing: {names - fires}"
    assert names == quiet, f"alerts never shown staying quiet: {names - quiet}"


def test_alerts_use_only_metrics_the_code_exports() -> None:
    used = {name for rule in rules() for name in re.findall(r"\bllm_edge_[a-z0-9_]+\b", rule["expr"])}
    assert used
    unknown = used - defined_metrics()
    assert not unknown, f"not defined in edge_front/metrics.py or edge_workers/metrics.py: {unknown}"
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description"} <= rule["annotations"].keys()


def test_compose_prometheus_loads_the_rules_beside_its_config() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file's directory
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./ops/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./ops/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"


def test_without_promtool_ci_fails_and_elsewhere_it_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        promtool("--version")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        promtool("--version")
