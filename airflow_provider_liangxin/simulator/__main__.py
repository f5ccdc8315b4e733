"""``python -m airflow_provider_liangxin.simulator``: same as the ``liangxin-simulator`` console script."""

import sys

from airflow_provider_liangxin.simulator.cli import main

sys.exit(main())
