"""The engine tests: the real Pulumi CLI against the cloud emulators (``tools/engine/install`` first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.harness import Project, init_stack, make_project


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """One project copy per test module, with its own backend and clouds."""
    yield make_project(tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module")
def dev(project: Project) -> dict[str, str]:
    """The dev stack deployed from empty with one ``pulumi up``; its sentinel secrets."""
    sentinels = init_stack(project, "dev")
    project.pulumi("up", "--yes", "--skip-preview", stack="dev")
    return sentinels
