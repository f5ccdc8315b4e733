"""Every error class the provider raises that a DAG author may catch, under one public import path.

The classes live next to the code that raises them (the wire protocol in ``_api``, downloads in ``results``,
input checks in ``models``, the Airflow-side outcomes in ``events``); this module is where users import them from,
as with every ASF provider's ``exceptions`` module. ``_api`` is private and may be reorganised.

Hierarchy::

    LiangxinError                          any problem with the API (wire protocol)
      LiangxinConfigError (ValueError)     unusable connection or argument, before any HTTP call
      LiangxinResponseError                an answer the protocol does not allow
      LiangxinHTTPError                    an error status
        LiangxinBadRequestError (400), LiangxinAuthError (401), LiangxinForbiddenError (403),
        LiangxinTaskNotFoundError (404), LiangxinPayloadTooLargeError (413),
        LiangxinUpstreamValidationError (422), LiangxinRateLimitError (429), LiangxinServerError (5xx)
      LiangxinTransportError               no HTTP answer
        LiangxinConnectError, LiangxinTimeoutError, LiangxinConnectTimeoutError (both)
      ResultDownloadError                  a result file could not be stored
    InputValidationError (ValueError)      input that breaks a model's documented schema
    LiangxinTaskFailedException (AirflowException)   the LiangXin task ended in ``fail``
      LiangxinSensorTaskFailedException (+ AirflowFailException)   the sensor's form: no retries
    LiangxinTaskWaitException              the wait broke (API error, transient errors too long)
"""

from __future__ import annotations

from airflow_provider_liangxin._api import (
    LiangxinAuthError,
    LiangxinBadRequestError,
    LiangxinConfigError,
    LiangxinConnectError,
    LiangxinConnectTimeoutError,
    LiangxinError,
    LiangxinForbiddenError,
    LiangxinHTTPError,
    LiangxinPayloadTooLargeError,
    LiangxinRateLimitError,
    LiangxinResponseError,
    LiangxinServerError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    LiangxinTransportError,
    LiangxinUpstreamValidationError,
)
from airflow_provider_liangxin.events import (
    LiangxinSensorTaskFailedException,
    LiangxinTaskFailedException,
    LiangxinTaskWaitException,
)
from airflow_provider_liangxin.models import InputValidationError
from airflow_provider_liangxin.results import ResultDownloadError

__all__ = [
    "InputValidationError",
    "LiangxinAuthError",
    "LiangxinBadRequestError",
    "LiangxinConfigError",
    "LiangxinConnectError",
    "LiangxinConnectTimeoutError",
    "LiangxinError",
    "LiangxinForbiddenError",
    "LiangxinHTTPError",
    "LiangxinPayloadTooLargeError",
    "LiangxinRateLimitError",
    "LiangxinResponseError",
    "LiangxinSensorTaskFailedException",
    "LiangxinServerError",
    "LiangxinTaskFailedException",
    "LiangxinTaskNotFoundError",
    "LiangxinTaskWaitException",
    "LiangxinTimeoutError",
    "LiangxinTransportError",
    "LiangxinUpstreamValidationError",
    "ResultDownloadError",
]
