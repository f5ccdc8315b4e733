"""The fault suite's CI subset (the full suite is ``./run faults``, tests/e2e/fault_suite.py).

21 LiangXin tasks (5 single-operator tasks, 6 mapped task instances and a batch of 10) on a real Airflow with two
triggerers, while the simulator answers recordInfo with 20 % 5xx, 10 % 429 and 5 % dropped connections, fails 10 % of
tasks and is restarted mid-run, and the busiest triggerer is killed with SIGKILL. The same invariants as the full
suite.
"""

from __future__ import annotations

import pytest

from tests.e2e.fault_suite import QUICK, SIM_RESTART, TRIGGERER_KILL, FaultSuite, fault_deployment, table

pytestmark = pytest.mark.e2e


def test_every_task_ends_right_under_faults_a_simulator_restart_and_a_triggerer_kill(tmp_path_factory, capsys):
    home = tmp_path_factory.mktemp("airflow-faults")
    with fault_deployment(home) as (env, sim, db):
        suite = FaultSuite(env, sim, db, say=lambda _message: None)
        try:
            result = suite.run(QUICK, timeout=400)
        finally:
            suite.close()
        with capsys.disabled():
            print(f"\n{table([result])}")
        failure_report = "\n".join(result.problems) + "\n" + env.component_tails(lines=30)

        assert result.problems == [], failure_report
        # The run was what it claims: every task instance checked, each with its LiangXin task, the faults injected.
        assert result.task_instances == QUICK.single_runs * 5 + QUICK.mapped + QUICK.batches
        assert result.right == result.task_instances
        assert result.liangxin_tasks == QUICK.liangxin_tasks
        assert sorted(result.disruptions_done) == sorted([SIM_RESTART, TRIGGERER_KILL])
        assert sim.restarts == 1
        assert min(result.faults["5xx"], result.faults["429"], result.faults["dropped"]) > 0, result.faults
        assert result.orphaned_triggers >= 1, result
        assert result.moved_triggers >= 1, result
        assert len(env.alive_triggerer_jobs()) == 1  # the killed one is not back
