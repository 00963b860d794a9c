"""The wheel as a user installs it: built from the source tree, installed on its own
(no editable install, no source tree on the path), ``import bptt`` and ``bptt --help``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_runs_on_its_own(tmp_path):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    build += ["--quiet", "--wheel-dir", str(wheels), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=300, cwd=tmp_path)
    (wheel,) = wheels.glob("bptt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bptt/py.typed" in names and "bptt/cells/_lru.py" in names
    sources = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))  # every module shipped

    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet"]
    install += ["--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300, cwd=tmp_path)
    # the dependencies come from this environment; bptt only from the installed wheel
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import bptt; print(bptt.__file__); print(bptt.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert Path(where[0]).is_relative_to(target) and where[1] == version
    script = target / "bin" / "bptt"
    helped = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    assert "train" in helped.stdout and "bench" in helped.stdout
