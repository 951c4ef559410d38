"""The built wheel on its own: installed in a clean virtual environment, away from the source
tree, `relops --help` and `relops init` work, and init writes the example configuration that
ships as package data (relops_pipeline/example/).

The wheel is built offline from a copy of the sources (no build isolation: the environment's
setuptools, from the dev extra, builds it; a copy so that no build/ folder in the repository
leaks stale files into it). The new environment gets the wheel with --no-deps; the dependencies
already installed in this environment are made importable by a .pth file holding the path of
this environment's site-packages as a plain line. A plain path line adds the folder to sys.path
without running that folder's own .pth files, so the repository's editable install is not
activated: `relops_pipeline` must come from the new environment's site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

from relops_pipeline.lib.identity import init_user_settings
from relops_pipeline_tests import procs

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "relops_pipeline" / "example"


def _run(cmd: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # Its own process group, reaped however it ends; the timeout scales with RELOPS_TEST_TIMEOUT_SCALE.
    proc = procs.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=procs.scaled(timeout))
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _setuptools_major() -> int:
    try:
        return int(version("setuptools").split(".")[0])
    except Exception:  # noqa: BLE001 — not installed
        return 0


@pytest.mark.slow
def test_wheel_installs_and_inits_a_home_outside_the_repository(tmp_path: Path):
    assert _setuptools_major() >= 77, (
        "building without isolation needs setuptools>=77 (pyproject's build-system) in this environment: "
        "pip install -c constraints.txt -e '.[dev]'")
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    # Build from a copy of what the wheel is made of.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *(p.name for p in REPO.glob("LICEN[CS]E*"))):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "relops_pipeline", src / "relops_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], timeout=300, cwd=cwd)
    (wheel,) = dist.glob("relops_pipeline-*.whl")

    # A clean environment with the wheel alone, and this environment's packages on a plain .pth line.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120, cwd=cwd)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         timeout=300, cwd=cwd)
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     timeout=60, cwd=cwd).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "relops_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    env = {k: v for k, v in os.environ.items() if k not in ("RELOPS_HOME", "DAGSTER_HOME", "PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    probe = ("import json, sys, relops_pipeline\n"
             "print(json.dumps({'file': relops_pipeline.__file__, 'path': sys.path,\n"
             "                  'editable': sorted(m for m in sys.modules if 'editable' in m)}))")
    where = json.loads(_run([str(py), "-c", probe], timeout=60, cwd=cwd, env=env).stdout)
    installed = Path(where["file"]).resolve()
    assert installed.is_relative_to(site.resolve()), where
    assert not installed.is_relative_to(REPO), where
    assert not where["editable"], "the repository's editable-install finder must not be active"
    assert not {str(REPO), str(REPO / "relops_pipeline")} & {str(Path(p).resolve()) for p in where["path"] if p}, where

    relops = venv / "bin" / "relops"
    helped = _run([str(relops), "--help"], timeout=120, cwd=cwd, env=env)
    assert "init" in helped.stdout and "demo" in helped.stdout

    home = tmp_path / "home"
    _run([str(relops), "init", "--example", "--home", str(home)], timeout=120, cwd=cwd, env=env)
    expected = sorted(p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*") if p.is_file())
    assert {"relops.yaml", "workflows/doc-qa.yaml", "workflows/support-triage.yaml",
            "suites/doc-qa/v1.yaml", "suites/support-triage/v1.yaml"} <= set(expected)
    for rel in expected:
        want = (EXAMPLE / rel).read_bytes()
        if rel == "relops.yaml":  # init lets the OS user who runs it act as the example's people
            want = init_user_settings(want.decode("utf-8")).encode("utf-8")
        assert (home / rel).read_bytes() == want, rel
    assert (home / "dagster" / "dagster.yaml").is_file()

    # The example workflows name the demo's simulated LLM by module path: it imports from the wheel.
    check = ("import yaml, relops_pipeline.demo.llm as m\n"
             "from relops_pipeline.lib.evals.scorers import load_callable\n"
             f"spec = yaml.safe_load(open({str(home / 'workflows' / 'doc-qa.yaml')!r}))['runner']['callable']\n"
             "load_callable(spec)\n"
             "print(spec, m.__file__)")
    out = _run([str(py), "-c", check], timeout=120, cwd=cwd, env=env).stdout
    assert "relops_pipeline.demo.llm:respond" in out and str(site) in out, out
    assert not list(cwd.iterdir()), "nothing is written to the working folder"


def test_example_files_read_from_a_zip_as_from_the_source_tree(tmp_path: Path):
    """`relops init` reads the example through importlib.resources' Traversable, so a package
    imported from a zip works too: the same files, the same bytes."""
    import zipfile

    from relops_pipeline.lib.home import example_config, example_files

    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(EXAMPLE.rglob("*")):
            if p.is_file():
                z.write(p, f"relops_pipeline/example/{p.relative_to(EXAMPLE).as_posix()}")
    with zipfile.ZipFile(archive) as z:
        zipped = {"/".join(parts): f.read_bytes() for parts, f in example_files(zipfile.Path(z, "relops_pipeline/example/"))}
    tree = {"/".join(parts): f.read_bytes() for parts, f in example_files(example_config())}
    assert zipped == tree and "relops.yaml" in tree and len(tree) >= 19
