"""Build hook: the wheel carries the Hydra configs.

``conf/`` stays at the top of the checkout (where every doc and command names it) and the build copies it
into the package as ``bench/conf``, where :data:`bench.CONF_DIR` looks first. Everything else about the
build is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildWithConf(build_py):
    """``build_py`` plus ``conf/**.yaml`` copied to ``<build>/bench/conf`` (an editable install reads ``conf/``)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "bench" / "conf"
        shutil.copytree(CONF, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))


setup(cmdclass={"build_py": BuildWithConf})
