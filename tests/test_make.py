"""What ``make test`` (the README's test command) runs, read from ``make -n``."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make_test_runs() -> list[dict[str, str]]:
    """The environment assignments in front of each ``python -m pytest`` that ``make test`` runs."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    runs = []
    for line in dry.splitlines():
        words = shlex.split(line)
        if "pytest" in words and words[words.index("pytest") - 1] == "-m":
            assignments = [w for w in words if "=" in w and not w.startswith("-")]
            runs.append(dict(w.split("=", 1) for w in assignments))
    return runs


def test_each_numerics_run_has_its_own_inductor_cache():
    """TorchInductor's cache keys ignore ``ATEN_CPU_CAPABILITY``: the baseline-ISA run would
    reuse kernels generated for this CPU's vector unit (a C++ build error, or wrong results)."""
    native, portable = make_test_runs()
    assert "ATEN_CPU_CAPABILITY" not in native
    assert portable["ATEN_CPU_CAPABILITY"] == "default"
    dirs = [run.get("TORCHINDUCTOR_CACHE_DIR") for run in (native, portable)]
    assert None not in dirs, f"set TORCHINDUCTOR_CACHE_DIR for both runs, got {dirs}"
    caches = [Path(d) for d in dirs if d is not None]
    assert all(cache.is_absolute() for cache in caches)  # notebook kernels run in course/
    assert caches[0] != caches[1]
