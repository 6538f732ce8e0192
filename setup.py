"""Packaging hook (the project's metadata is in pyproject.toml).

The chapters read files that live at the top of the repository: the records in ``results/``, the
sweep configs in ``sweeps/`` and the shipped SAEs in ``pretrained/`` (~26 MB in all). A wheel
carries a copy of them inside the package, at ``abstopk_mini/_repo/``, so that
``pip install abstopk_mini-*.whl`` works without a checkout; :func:`abstopk_mini.repo.repo_root`
finds that copy when no checkout is found. An editable install (``pip install -e .``) copies
nothing: it reads the checkout itself. ``MANIFEST.in`` puts the same folders into the sdist, so a
wheel built from the sdist has them too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: the repository's folders a wheel carries (abstopk_mini.repo.BUNDLED lists the same)
REPO_DATA = ("results", "sweeps", "pretrained")


class build_py_with_repo_data(build_py):
    """``build_py`` that also copies :data:`REPO_DATA` into ``<build>/abstopk_mini/_repo/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        dest = Path(self.build_lib) / "abstopk_mini" / "_repo"
        for name in REPO_DATA:
            if not (root / name).is_dir():
                raise FileNotFoundError(f"{root / name} is missing: build the wheel from a checkout or an sdist "
                                        "(they hold results/, sweeps/ and pretrained/)")
            shutil.copytree(root / name, dest / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.tmp", "*.lock"))


setup(cmdclass={"build_py": build_py_with_repo_data})
