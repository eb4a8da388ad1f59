"""The same batch, graded through the local pool and through a real Dask LocalCluster, gives
the same gradebook."""

from __future__ import annotations

import pytest
from distributed import LocalCluster

from autograder import commands
from tests.conftest import REPO

EXAMPLES = REPO / "examples" / "submitted"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local_cluster:
        yield local_cluster


def test_dask_cluster_and_local_pool_give_the_same_gradebook(course, cluster) -> None:
    local = commands.grade(course, "backprop", EXAMPLES, regrade=True)
    local_table = commands.gradebook_table(course, "backprop").loc[[r.student_id for r in local]]
    on_dask = commands.grade(course, "backprop", EXAMPLES, regrade=True,
                             scheduler=cluster.scheduler_address)
    dask_table = commands.gradebook_table(course, "backprop").loc[[r.student_id for r in on_dask]]

    assert [r.student_id for r in on_dask] == [r.student_id for r in local]
    assert dask_table.equals(local_table)
    for here, there in zip(local, on_dask, strict=True):
        assert [(t.name, t.points, t.message) for t in here.tests] == \
            [(t.name, t.points, t.message) for t in there.tests]
        assert here.fingerprint == there.fingerprint
        assert there.sandbox_off == []
    assert {r.student_id: r.score for r in on_dask}["solution"] == 10
