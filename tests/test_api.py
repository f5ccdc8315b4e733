"""The wire protocol: parsing both error shapes, envelopes, records and the retry rules."""

from __future__ import annotations

import email.utils
import json
import pickle

import pytest

from airflow_provider_liangxin import _api
from airflow_provider_liangxin._api import (
    LiangxinAuthError,
    LiangxinBadRequestError,
    LiangxinConnectError,
    LiangxinForbiddenError,
    LiangxinPayloadTooLargeError,
    LiangxinRateLimitError,
    LiangxinResponseError,
    LiangxinServerError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    LiangxinTransportError,
    LiangxinUpstreamValidationError,
    RetryPolicy,
    TaskRecord,
    TaskState,
)
from tests.support.scripted_server import record

GET = _api.build_record_info("task_x_1")
POST = _api.build_create_task("seedream-v4-5", {"prompt": "a cat"})


def _parse(status: int, body, headers=None, request=GET):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _api.parse_response(request, status, headers or {}, raw)


class TestTaskState:
    def test_terminal_and_success(self):
        assert [s.value for s in TaskState if s.is_terminal] == ["success", "fail"]
        assert [s.value for s in TaskState if s.is_success] == ["success"]

    @pytest.mark.parametrize("value", ["done", "", None, "succeeded", "cancelled"])
    def test_unknown_state_raises_never_success(self, value):
        with pytest.raises(LiangxinResponseError, match="unknown task state"):
            TaskState.parse(value)

    def test_parse_tolerates_case(self):
        assert TaskState.parse("SUCCESS") is TaskState.SUCCESS


class TestTaskRecord:
    def test_success_record_parses_json_strings(self):
        rec = TaskRecord.from_api(record(state="success"))
        assert rec.state is TaskState.SUCCESS
        assert rec.result_urls == ["https://cdn.example/a.png"]
        assert rec.param == {"model": "seedream-v4-5", "input": {"prompt": "a cat"}}
        assert rec.create_time == 1777600000000
        assert rec.complete_time == 1777600012000

    def test_numeric_fail_code_is_accepted(self):
        rec = TaskRecord.from_api(record(state="fail", failCode=501, failMsg="nsfw"))
        assert (rec.fail_code, rec.fail_msg) == ("501", "nsfw")

    def test_round_trip_through_json(self):
        rec = TaskRecord.from_api(record(state="success", progress=100))
        again = TaskRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
        assert again == rec

    def test_long_data_uris_are_summarised_in_the_json_native_form(self):
        image = "data:image/png;base64," + "A" * 5000
        param = json.dumps(
            {"model": "nano-banana-pro", "input": {"prompt": "x", "image_input": [image, "https://h/a.png"]}}
        )
        rec = TaskRecord.from_api(record(state="success", param=param))
        assert rec.param["input"]["image_input"][0] == image  # the parsed record stays faithful
        summary = rec.to_dict()["param"]["input"]["image_input"]
        assert summary == ["data:image/png;base64,…(5022 chars)", "https://h/a.png"]

    def test_success_without_urls_is_an_error(self):
        with pytest.raises(LiangxinResponseError, match="no resultUrls"):
            TaskRecord.from_api(record(state="success", resultJson="{}"))

    def test_bad_result_json_is_an_error(self):
        with pytest.raises(LiangxinResponseError, match="resultJson is not valid JSON"):
            TaskRecord.from_api(record(state="success", resultJson="{oops"))

    def test_missing_task_id(self):
        with pytest.raises(LiangxinResponseError, match="no taskId"):
            TaskRecord.from_api({"state": "waiting"})


class TestParseResponse:
    def test_success_envelope(self):
        assert _parse(200, {"code": 200, "msg": "success", "data": {"taskId": "t"}}) == {"taskId": "t"}

    def test_message_key_accepted_instead_of_msg(self):
        with pytest.raises(LiangxinBadRequestError, match="prompt is required"):
            _parse(400, {"code": 400, "message": "prompt is required", "data": None})

    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, LiangxinBadRequestError),
            (401, LiangxinAuthError),
            (403, LiangxinForbiddenError),
            (404, LiangxinTaskNotFoundError),
            (413, LiangxinPayloadTooLargeError),
            (422, LiangxinUpstreamValidationError),
            (429, LiangxinRateLimitError),
            (500, LiangxinServerError),
            (502, LiangxinServerError),
        ],
    )
    @pytest.mark.parametrize("shape", ["business", "gateway"])
    def test_every_status_and_both_shapes(self, status, cls, shape):
        body = (
            {"code": status, "msg": f"reason {status}", "data": None}
            if shape == "business"
            else {"error": {"message": f"reason {status} (request id: req-42)", "type": "new_api_error", "code": ""}}
        )
        with pytest.raises(cls) as info:
            _parse(status, body)
        assert info.value.status_code == status
        assert f"reason {status}" in str(info.value)
        assert f"HTTP {status}" in str(info.value)
        if shape == "gateway":
            assert info.value.request_id == "req-42"

    def test_request_id_header(self):
        with pytest.raises(LiangxinServerError, match="request id abc-1"):
            _parse(500, {"code": 500, "msg": "boom", "data": None}, {"X-Request-Id": "abc-1"})

    @pytest.mark.parametrize(
        ("status", "raw", "cls"),
        [
            (502, b"<html><body>Bad gateway</body></html>", LiangxinServerError),
            (200, b"<html>maintenance</html>", LiangxinResponseError),
            (200, b"", LiangxinResponseError),
            (500, b"", LiangxinServerError),
        ],
    )
    def test_non_json_bodies_give_typed_errors_with_excerpt(self, status, raw, cls):
        with pytest.raises(cls) as info:
            _parse(status, raw)
        assert info.value.status_code == status
        assert info.value.body_excerpt
        if raw:
            assert raw.decode()[:10] in str(info.value)

    def test_code_not_200_inside_http_200(self):
        with pytest.raises(LiangxinForbiddenError, match="quota"):
            _parse(200, {"code": 403, "msg": "quota exhausted", "data": None})

    def test_long_html_is_excerpted(self):
        with pytest.raises(LiangxinServerError) as info:
            _parse(503, b"<html>" + b"x" * 5000 + b"</html>")
        assert len(info.value.body_excerpt) <= _api.BODY_EXCERPT_CHARS + 1

    def test_retry_after_seconds_and_date(self):
        with pytest.raises(LiangxinRateLimitError) as info:
            _parse(429, {"error": {"message": "busy", "type": "x", "code": ""}}, {"Retry-After": "7"})
        assert info.value.retry_after == 7
        date = email.utils.formatdate(1_000_000_030, usegmt=True)
        assert _api.parse_retry_after(date, now=1_000_000_000) == pytest.approx(30)
        assert _api.parse_retry_after("garbage") is None
        assert _api.parse_retry_after(None) is None

    def test_errors_survive_pickling(self):
        err = LiangxinRateLimitError("busy", status_code=429, request_id="r1")
        err.retry_after = 3
        again = pickle.loads(pickle.dumps(err))
        assert (type(again), str(again), again.retry_after) == (type(err), str(err), 3)


class TestRetryRules:
    @pytest.mark.parametrize(
        ("exc", "get_retried", "post_retried"),
        [
            (LiangxinRateLimitError("x"), True, True),
            (LiangxinConnectError("x"), True, True),
            (LiangxinServerError("x"), True, False),
            (LiangxinTimeoutError("x"), True, False),
            (LiangxinTransportError("x"), True, False),
            (LiangxinBadRequestError("x"), False, False),
            (LiangxinAuthError("x"), False, False),
            (LiangxinForbiddenError("x"), False, False),
            (LiangxinTaskNotFoundError("x"), False, False),
            (LiangxinUpstreamValidationError("x"), False, False),
            (ValueError("x"), False, False),
        ],
    )
    def test_matrix(self, exc, get_retried, post_retried):
        assert _api.is_retryable(GET, exc) is get_retried
        assert _api.is_retryable(POST, exc) is post_retried

    def test_policy_validation(self):
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy.from_kwargs({"max_attempts": 0})
        with pytest.raises(ValueError, match="unknown retry settings: tries"):
            RetryPolicy.from_kwargs({"tries": 3})
        assert RetryPolicy.from_kwargs({"max_attempts": 2}).to_dict()["max_attempts"] == 2

    def test_backoff_is_capped_and_jittered(self):
        policy = RetryPolicy(backoff_initial=1, backoff_max=4)
        waits = [policy.backoff(10) for _ in range(200)]
        assert max(waits) <= 4
        assert len({round(w, 3) for w in waits}) > 10

    def test_builders_reject_bad_arguments(self):
        with pytest.raises(ValueError, match="model"):
            _api.build_create_task("", {"prompt": "x"})
        with pytest.raises(ValueError, match="input must be a mapping"):
            _api.build_create_task("m", ["x"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="task_id"):
            _api.build_record_info(" ")
        assert _api.build_create_task("m", {}, "https://h/cb").json_body == {
            "model": "m",
            "input": {},
            "callBackUrl": "https://h/cb",
        }


class TestLimits:
    def test_the_limits_are_the_documented_ones(self):
        assert (_api.MAX_API_RESPONSE_BYTES, _api.API_TEXT_MAX_CHARS) == (4 * 1024 * 1024, 2000)

    def test_cap_text_marks_the_cut_and_is_idempotent(self):
        text = "a" * 10_000
        cut = _api.cap_text(text)
        assert len(cut) == _api.API_TEXT_MAX_CHARS
        assert cut.endswith("…[cut: 10000 chars in all]")
        assert _api.cap_text(cut) == cut
        assert _api.cap_text("short") == "short"

    @pytest.mark.parametrize(
        "body",
        [
            {"code": 500, "msg": "m" * 100_000, "data": None},
            {"error": {"message": "m" * 100_000, "type": "t", "code": ""}},
            {"code": "c" * 100_000, "data": None},
        ],
        ids=["msg", "error.message", "code"],
    )
    def test_api_text_in_errors_is_capped(self, body):
        with pytest.raises(_api.LiangxinError) as info:
            _parse(500 if "error" in body or body.get("code") == 500 else 200, body)
        assert len(str(info.value)) < _api.API_TEXT_MAX_CHARS + 200

    def test_fail_msg_and_fail_code_are_capped_in_records_and_events(self):
        rec = TaskRecord.from_api(record(state="fail", failCode="c" * 50_000, failMsg="f" * 5_000_000))
        assert len(rec.fail_msg) == len(rec.fail_code) == _api.API_TEXT_MAX_CHARS
        again = TaskRecord.from_dict({**rec.to_dict(), "fail_msg": "g" * 50_000})
        assert len(again.fail_msg) == _api.API_TEXT_MAX_CHARS

    def test_record_must_be_of_the_task_asked_for(self):
        assert _api.parse_record_info(record("task_a"), " task_a ").task_id == "task_a"
        with pytest.raises(LiangxinResponseError, match="answered for task 'task_b' when 'task_a' was asked"):
            _api.parse_record_info(record("task_b"), "task_a")

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_a_redirect_is_an_error_naming_it(self, status):
        with pytest.raises(_api.LiangxinHTTPError, match="answered a redirect to https://elsewhere/x") as info:
            _parse(status, b"", {"Location": "https://elsewhere/x"}, request=POST)
        assert info.value.status_code == status
        assert not _api.is_retryable(POST, info.value)
        assert not _api.is_retryable(GET, info.value)

    @pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-5", "-0.5", "1e999"])
    def test_non_finite_or_negative_retry_after_is_ignored(self, value):
        assert _api.parse_retry_after(value) is None

    def test_valid_retry_after_values(self):
        assert _api.parse_retry_after("0") == 0
        assert _api.parse_retry_after(" 2.5 ") == 2.5


class TestRetryPolicyValues:
    @pytest.mark.parametrize("name", RetryPolicy.field_names())
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True, False, "3", None, -1])
    def test_non_finite_bool_and_wrong_types_are_config_errors(self, name, value):
        with pytest.raises(_api.LiangxinConfigError, match=name):
            RetryPolicy.from_kwargs({name: value})

    def test_field_names_come_from_the_dataclass(self):
        import dataclasses

        names = tuple(f.name for f in dataclasses.fields(RetryPolicy))
        assert (
            RetryPolicy.field_names() == names == ("max_attempts", "backoff_initial", "backoff_max", "max_wait_total")
        )
        assert tuple(RetryPolicy().to_dict()) == names
        with pytest.raises(_api.LiangxinConfigError, match="allowed: max_attempts, backoff_initial"):
            RetryPolicy.from_kwargs({"tries": 3})

    def test_round_trip_and_ints_for_floats(self):
        policy = RetryPolicy.from_kwargs(
            {"max_attempts": 2, "backoff_initial": 0, "backoff_max": 3, "max_wait_total": 9}
        )
        assert RetryPolicy.from_kwargs(policy.to_dict()) == policy

    def test_a_huge_attempt_number_does_not_overflow_the_backoff(self):
        assert 0 <= RetryPolicy(backoff_initial=1, backoff_max=4).backoff(10_000) <= 4

    def test_finite_number(self):
        assert _api.finite_number(3, "x") == 3.0
        with pytest.raises(_api.LiangxinConfigError, match="x must be > 0"):
            _api.finite_number(0, "x", inclusive=False)


def test_dead_code_is_gone():
    assert not hasattr(_api, "auth_headers")
    assert not hasattr(LiangxinTransportError, "request_sent")
    assert issubclass(_api.LiangxinConnectTimeoutError, LiangxinConnectError)
    assert issubclass(_api.LiangxinConnectTimeoutError, LiangxinTimeoutError)
