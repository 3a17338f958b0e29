"""Build hook: put the course chapters into built wheels as ``pruneplug/course/*.ipynb``.

Everything else about the package is declared in pyproject.toml. The chapters live in
``course/`` at the repository root (a clone opens them there with ``make lab``); a wheel has no
repository root, so ``build_py`` copies them into the built package, where
``pruneplug.cli.course_dir()`` finds them after ``pip install``. An editable install
(``pip install -e``) builds nothing: it keeps reading the checkout's ``course/`` (mapping
``course/`` as a package ``pruneplug.course`` instead broke setuptools' editable finder).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: the chapters in the source tree (a clone, or an sdist that MANIFEST.in filled)
COURSE = Path(__file__).resolve().parent / "course"


class BuildPyWithCourse(build_py):
    """``build_py`` that also copies ``course/*.ipynb`` to ``<build_lib>/pruneplug/course/``."""

    def chapters(self) -> list[Path]:
        """The chapter notebooks to ship; a build without them is an error, not a smaller wheel."""
        found = sorted(COURSE.glob("*.ipynb"))
        if not found:
            raise FileNotFoundError(
                f"no course chapters in {COURSE}: build pruneplug from a full clone, or from an "
                "sdist made with MANIFEST.in (it includes course/*.ipynb)"
            )
        return found

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's course/ in place
            return
        target = Path(self.build_lib) / "pruneplug" / "course"
        self.mkpath(str(target))
        for chapter in self.chapters():
            self.copy_file(str(chapter), str(target / chapter.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """The package's files plus the copied chapters (install's ``--record`` lists these)."""
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        target = Path(self.build_lib) / "pruneplug" / "course"
        return outputs + [str(target / chapter.name) for chapter in self.chapters()]


setup(cmdclass={"build_py": BuildPyWithCourse})
