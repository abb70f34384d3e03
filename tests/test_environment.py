"""environment.yml and pyproject.toml name the same Python dependencies."""

from __future__ import annotations

import re
import tomllib

from wasi_lab.paths import REPO_ROOT


def _pip_section(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s+- pip:\s*$", line))
    out = []
    for line in lines[start + 1 :]:
        m = re.match(r"\s{6,}- (.+)$", line)
        if not m:
            break
        out.append(m.group(1).strip())
    return out


def test_environment_matches_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = _pip_section((REPO_ROOT / "environment.yml").read_text())
    assert sorted(d for d in env if not d.startswith("-e")) == sorted(project["dependencies"])
    # The workshop's environment, as `make lab` installs it: the package without extras.
    assert [d for d in env if d.startswith("-e")] == ["-e ."]


def test_environment_has_rust_with_the_wasm_std() -> None:
    text = (REPO_ROOT / "environment.yml").read_text()
    assert re.search(r"- rust>=1\.63", text) and "rust-std-wasm32-wasi" in text
