"""The systemd unit: notify with a watchdog, no restart loop on a bad config, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "config" / "mailbot.service"


def setting(name: str) -> list[str]:
    """Every value the unit gives ``name``."""
    return re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)


def test_the_unit_waits_for_ready_and_stops_restarting_on_a_bad_config() -> None:
    """Type=notify with a watchdog; exit 78 (bad config) is not restarted in a loop."""
    assert setting("Type") == ["notify"] and setting("WatchdogSec")
    assert "78" in setting("RestartPreventExitStatus")[0].split()


def test_systemd_rates_the_unit_at_most_2_5() -> None:
    """`systemd-analyze security` rates the shipped unit 2.5 or lower (OK)."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (tests/run.sh installs it)"
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout
