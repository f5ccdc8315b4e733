"""``airflow_provider_liangxin.exceptions`` re-exports every public error class, as the very same objects."""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_liangxin import _api, events, exceptions, models, results

#: Where each public error class is defined.
DEFINING_MODULES = (_api, events, models, results)


def _defined_errors() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in DEFINING_MODULES:
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = obj
    return found


def test_every_public_error_is_exported():
    assert sorted(_defined_errors()) == sorted(exceptions.__all__)


@pytest.mark.parametrize("name", sorted(_defined_errors()))
def test_reexport_is_the_same_class_object(name):
    assert getattr(exceptions, name) is _defined_errors()[name]


def test_the_sensor_failure_is_both_a_task_failure_and_final():
    from airflow.providers.common.compat.sdk import AirflowFailException

    assert issubclass(exceptions.LiangxinSensorTaskFailedException, exceptions.LiangxinTaskFailedException)
    assert issubclass(exceptions.LiangxinSensorTaskFailedException, AirflowFailException)
    assert not issubclass(exceptions.LiangxinTaskWaitException, exceptions.LiangxinError)
