"""What `pip install .` puts into site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_installs_two_commands_and_no_generic_top_level_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mcpd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("mcpd-")}
    assert top_level == {"mcpd", "mcpctl"}
    assert "mcpctl/cli.py" in names
    assert "mcpctl/editors/jsonc.py" in names
    assert "mcpd/protocol.py" in names
    # The unit templates of `mcpd service install`, from systemd/.
    for unit in ("mcpd.service", "mcpd.socket"):
        assert (
            zipfile.ZipFile(wheel).read(f"mcpd/unitfiles/{unit}")
            == (REPO / "systemd" / unit).read_bytes()
        )
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mcpd = mcpd.cli:main" in scripts
    assert "mcpctl = mcpctl.entry:main" in scripts
