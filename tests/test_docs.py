"""The manual cannot rot: the configuration reference covers every key, the README keeps its promises, and the
commands the docs mark ``<!-- tested -->`` (offline, demo-sized) run as written. The site itself is built strictly
by .ci/run (``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
INSTALL = ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[demo]" '
           "&& objalign run configs/demo.yaml --out runs/demo")
TESTS = 'pip install -e ".[demo,test]" && python -m pytest -q'


def _gen_config():
    spec = importlib.util.spec_from_file_location("gen_config", ROOT / "docs" / "gen_config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_config_field_has_a_description():
    assert _gen_config().undescribed() == [], "give these config fields a #: comment (docs/gen_config.py)"


def test_configuration_reference_is_generated_from_the_code():
    gen = _gen_config()
    assert (ROOT / "docs" / "configuration.md").read_text() == gen.generate(), \
        "docs/configuration.md is stale: run python docs/gen_config.py"
    import dataclasses

    from objalign.config import (
        RunConfig,  # every key of a default config appears in the page
    )

    def keys(obj, prefix):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            yield from keys(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else [f"{prefix}{f.name}"]
    page = gen.generate()
    missing = [k for k in keys(RunConfig(), "") if f"| `{k}` |" not in page]
    assert missing == []


def test_readme_is_short_and_its_two_commands_are_on_the_first_screen():
    assert len(README) < 8000
    first = "\n".join(README.splitlines()[:60])
    assert INSTALL in first and TESTS in first


def test_readme_links_exist():
    for target in re.findall(r"\]\(\s*([^)#\s]+)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def _blocks(text: str, lang: str, tested_only: bool = True) -> list[str]:
    marker = r"<!-- tested -->\s*\n" if tested_only else ""
    return re.findall(marker + r"```" + lang + r"\n(.*?)```", text, flags=re.S)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_readme_python_example_runs_as_written(tmp_path):
    (code,) = _blocks(README, "python", tested_only=False)
    assert "evaluate_alignment" in code and len(code.strip().splitlines()) <= 12
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "heldout_categories" in out.stdout
    assert (tmp_path / "runs" / "arrays" / "report.json").exists()


def _run_shell(block: str, cwd: Path):
    # `objalign` as the installed console script would run it, from this source tree
    bindir = cwd / "_bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "objalign"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m objalign.cli \"$@\"\n")
    script.chmod(0o755)
    env = _env()
    env["PATH"] = f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("configs",):
        if not (cwd / name).exists():
            (cwd / name).symlink_to(ROOT / name)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (block, out.stdout[-2000:], out.stderr[-3000:])
    return out


TESTED = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
                if "<!-- tested -->" in p.read_text())


def test_tested_blocks_are_found():
    assert {"docs/howto/own-embeddings.md", "docs/howto/own-dataset.md"} <= set(TESTED)


@pytest.mark.parametrize("page", TESTED)
def test_howto_commands_run_as_written(page, tmp_path):
    text = (ROOT / page).read_text()
    blocks = [("python", b) for b in _blocks(text, "python")] + [("bash", b) for b in _blocks(text, "bash")]
    assert blocks
    for lang, block in blocks:  # python blocks first: a page's shell blocks may read what they wrote
        if lang == "python":
            out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=_env(), capture_output=True,
                                 text=True, timeout=600)
            assert out.returncode == 0, out.stderr[-3000:]
        else:
            _run_shell(block, tmp_path)
    if page.endswith("own-embeddings.md"):
        assert (tmp_path / "runs" / "mine" / "report.json").exists()
        assert (tmp_path / "runs" / "arrays" / "report.json").exists()


def test_the_site_builds_and_its_pages_render_in_headless_chromium(tmp_path):
    """Seen in a browser: the strict build, then the home page and the API page of evaluate_alignment rendered by
    headless Chromium show their headings and their code."""
    import shutil

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install -y chromium)")
    pytest.importorskip("mkdocs", reason="the docs tools are in the test extra: pip install -e '.[test]'")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert build.returncode == 0, build.stderr[-3000:]

    def dom(page: Path) -> str:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout

    home = dom(site / "index.html")
    assert "<h1" in home and "objalign" in home and "<code" in home, home[:2000]
    api = dom(site / "reference" / "evaluation" / "index.html")
    assert "evaluate_alignment" in api and "AlignmentResult" in api and "<code" in api, api[:2000]
