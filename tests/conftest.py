import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "unit"))
sys.path.insert(0, str(HERE / "distros"))
sys.path.insert(0, str(HERE / "containers"))

_matrix = None


def pytest_collection_modifyitems(session, config, items):
    """Tests marked matrix(KIND, RELEASE[, KERNEL]) wait for a long job
    (tests/distros/jobs.py): run them last, so that this machine's own
    tests run while the jobs do."""
    items.sort(key=lambda item: item.get_closest_marker("matrix") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session):
    """Start every job the selected tests wait for, in the background."""
    global _matrix
    wanted = {tuple(m.args) for item in session.items for m in item.iter_markers("matrix")}
    if wanted and not session.config.option.collectonly:
        from jobs import Matrix
        from matrix import RELEASES
        _matrix = Matrix(list(RELEASES), wanted)
    yield


def pytest_sessionfinish(session, exitstatus):
    if _matrix is not None:
        _matrix.shutdown()


@pytest.fixture(scope="session")
def matrix():
    assert _matrix is not None, "no test of this session asked for a matrix job"
    return _matrix
