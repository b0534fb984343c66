"""The wheel is a working install: it carries conf/, its console script runs a smoke run from any folder,
and Hydra's tab completion answers for ``softprompt-bench``.

The wheel is built from a copy of the sources (nothing is written into the checkout) and installed into a
fresh venv without its dependencies: the venv sees this interpreter's packages (torch, transformers, ...)
through a ``.pth`` line, since ``--system-site-packages`` from inside a venv reaches only the base Python's.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

# 35 s on the 2 shared cores (17 s of CPU), most of it the smoke run's imports: over the 30 s a fast test may take
pytestmark = pytest.mark.slow

SMOKE = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke"]
"""The fastest run there is: a tiny random model, the seeded synthetic task, 4 steps."""


def _copy_sources(target: Path) -> None:
    """What the build reads: the packages pyproject.toml finds, conf/ (setup.py copies it in), the build files."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    names = [p.name for p in ROOT.iterdir() if p.is_dir() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in [*names, "conf"]:
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, target / name)


def _run(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv installs
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**clean, **env})


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (no dependencies); returns its bin/ folder."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("venv") is None:
        pytest.skip("pip and venv are needed to build and install the wheel")
    tmp = tmp_path_factory.mktemp("package")
    _copy_sources(tmp / "src")
    pip = [sys.executable, "-m", "pip"]
    built = _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(tmp / "src")], tmp
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("softprompt_bench-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp)
    assert made.returncode == 0, made.stderr
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "shared_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    done = _run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def test_wheel_runs_a_smoke_run_from_another_folder(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed / "python"), "-c", "import bench; print(bench.CONF_DIR)"], tmp_path)
    conf = Path(where.stdout.strip())
    assert where.returncode == 0 and conf.name == "conf" and conf.parent.parent.name == "site-packages", where
    assert sorted(p.name for p in conf.iterdir()) == sorted(p.name for p in (ROOT / "conf").iterdir())

    result = _run([str(installed / "softprompt-bench"), *SMOKE, f"runs_root={tmp_path / 'runs'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "runs").glob("default/prompt_tuning/tiny_bert/synth_cls/*/seed=0/result.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["metrics"]["primary"] == "accuracy"
    assert not (tmp_path / "conf").exists()  # the configs came from the package, not from the folder


def test_hydra_help_and_tab_completion(installed: Path, tmp_path: Path) -> None:
    script = installed / "softprompt-bench"
    helped = _run([str(script), "--hydra-help"], tmp_path)
    assert helped.returncode == 0 and "Hydra (" in helped.stdout, helped.stderr
    install = _run([str(script), "-sc", "install=bash"], tmp_path)
    assert install.returncode == 0 and install.stdout.rstrip().endswith("hydra_bash_completion softprompt-bench")
    if shutil.which("bash") is None:
        pytest.skip("no bash to run the completion function in")
    # what bash does on <TAB> after `softprompt-bench trainer=s`: the installed function fills COMPREPLY
    line = "softprompt-bench trainer=s"
    shell = f'eval "$(softprompt-bench -sc install=bash)"; COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_CWORD=1; '
    shell += 'hydra_bash_completion; echo "${COMPREPLY[@]}"'
    completed = _run(["bash", "-c", shell], tmp_path, PATH=f"{installed}{os.pathsep}{os.environ.get('PATH', '')}")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["trainer=smoke"]
