"""A local LiangXin Market API simulator (FastAPI + uvicorn), for tests, demos and load tests.

It imports only the provider's wire protocol (``_api``) and model rules (``models``), never Airflow, so it
runs anywhere the package is installed::

    from airflow_provider_liangxin.simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(durations=(0.1, 0.1, 0.3))) as sim:
        sim.base_url, sim.api_key, sim.stats(), sim.set_faults({...}), sim.reset(), sim.callbacks()

or from a shell: ``liangxin-simulator --port 8765`` (see ``--help``).
"""

from airflow_provider_liangxin.simulator.app import create_app
from airflow_provider_liangxin.simulator.config import DEV_API_KEY, SimulatorConfig
from airflow_provider_liangxin.simulator.faults import FaultConfig
from airflow_provider_liangxin.simulator.server import SimulatorProcess, SimulatorServer, free_port, run_simulator

__all__ = [
    "DEV_API_KEY",
    "FaultConfig",
    "SimulatorConfig",
    "SimulatorProcess",
    "SimulatorServer",
    "create_app",
    "free_port",
    "run_simulator",
]
