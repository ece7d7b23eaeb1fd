"""``centaure rules check`` on the shipped rules and on a broken file."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from centaure.shipped import example_path


def check(ini: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "centaure.cli", "rules", "check", "-c", ini],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_shipped_rules_are_valid_and_described():
    out = check(example_path("settings.ini"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == f"{len(lines) - 1} rules valid (rules.yaml)"
    assert any(line.startswith("battery-voltage-low: batteryVoltage < 47.5") for line in lines)


def test_a_broken_rule_is_named_with_its_field(tmp_path):
    (tmp_path / "rules.yaml").write_text(
        "- name: ok\n  when: {metric: cpu, op: '>', value: 90}\n"
        "- name: broken\n  when: {metric: x}\n")
    (tmp_path / "settings.ini").write_text("[alerter]\nrules = rules.yaml\n")
    out = check(str(tmp_path / "settings.ini"))
    assert out.returncode == 1 and out.stdout == ""
    assert "rule 2" in out.stderr and "(broken): when:" in out.stderr
    assert "Traceback" not in out.stderr
