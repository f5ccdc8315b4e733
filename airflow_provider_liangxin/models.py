"""Input schemas for the LiangXin models, in one place and with no Airflow in them.

Two callers must agree exactly: the operator validates a task's rendered ``input`` before it spends money on a
request, and the embedded simulator validates the same way to behave like the real server. Both call
:func:`validate_input`, so a rule changed here changes for both.

Each model is a declarative table (field name -> :class:`Field`) built from a few shared rule objects, plus
small functions for the rules that span several fields. Every problem is collected before raising, so a DAG
author fixes all typos in one round trip.

Source tags say where a rule comes from: [D] documented by LiangXin (its model pages), [U] taken from the
upstream Magnific/Freepik docs, [I] our own inference. docs/models.md lists the rules per model.

The typed input helpers at the end repeat each model's field names for autocompletion; each names the models it
serves (``models``), and tests/test_models.py checks helpers and schemas against each other in both directions.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = [
    "KNOWN_MODELS",
    "VIDEO_MODELS",
    "FluxInput",
    "ImagenInput",
    "InputValidationError",
    "KlingInput",
    "NanoBananaInput",
    "SeedreamInput",
    "ZImageInput",
    "is_video_model",
    "normalize_aspect_ratio",
    "output_dimensions",
    "validate_input",
]

MAX_SEED = 4_294_967_295
_SHOW_CHARS = 60  # bad values are echoed in messages; a 4 KB prompt or a data URI must not flood a log


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _span(low: int | float | None, high: int | float | None) -> str:
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else "any"


def _within(value: int | float, low: int | float | None, high: int | float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


class InputValidationError(ValueError):
    """Raised before any paid request; carries every problem so they can all be fixed at once."""

    def __init__(self, model: str, problems: Sequence[str]) -> None:
        self.model = model
        self.problems = list(problems)
        super().__init__(f"Invalid input for LiangXin model '{model}': " + "; ".join(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        # Airflow may pickle task exceptions; the default reduce would call __init__ with the message only.
        return (type(self), (self.model, self.problems))


# --------------------------------------------------------------------------------------------- aspect ratios

#: Magnific/Freepik alias -> ratio (§6); ``film_*_21_9`` is left out (only in unverified third-party code).
_RATIO_ALIASES: Mapping[str, str] = {
    "square_1_1": "1:1",
    "classic_4_3": "4:3",
    "traditional_3_4": "3:4",
    "widescreen_16_9": "16:9",
    "social_story_9_16": "9:16",
    "standard_3_2": "3:2",
    "portrait_2_3": "2:3",
    "cinematic_21_9": "21:9",
    "social_5_4": "5:4",
    "social_post_4_5": "4:5",
    "smartphone_horizontal_20_9": "20:9",
    "smartphone_vertical_9_20": "9:20",
    "horizontal_2_1": "2:1",
    "vertical_1_2": "1:2",
}
_RATIOS = tuple(dict.fromkeys(_RATIO_ALIASES.values()))


def normalize_aspect_ratio(value: str) -> str:
    """Map an alias or ratio to the canonical ``"w:h"`` form, so size tables need one key per ratio."""
    if isinstance(value, str):
        if value in _RATIO_ALIASES:
            return _RATIO_ALIASES[value]
        if value in _RATIOS:
            return value
    raise ValueError(
        f"unknown aspect ratio {_show(value)}; use one of {', '.join(_RATIOS)} or {', '.join(_RATIO_ALIASES)}"
    )


def _fit(ratio: str, long_side: int, multiple: int = 16) -> tuple[int, int]:
    """Scale a ratio to a long side, rounding the short side to what image models usually produce."""
    w, h = (int(part) for part in ratio.split(":"))
    short = max(multiple, round(long_side * min(w, h) / max(w, h) / multiple) * multiple)
    return (long_side, short) if w >= h else (short, long_side)


# ------------------------------------------------------------------------------------------------------ rules


class Rule(ABC):
    """A check on one value; returns problems instead of raising so every problem can be reported."""

    @abstractmethod
    def check(self, path: str, value: Any) -> list[str]: ...


@dataclass(frozen=True)
class Text(Rule):
    min_len: int = 1
    max_len: int | None = None

    def check(self, path: str, value: Any) -> list[str]:
        if not isinstance(value, str):
            return [f"{path}={_show(value)} must be a string"]
        if self.min_len > 0 and not value.strip():
            return [f"{path}={_show(value)} must not be empty"]
        if not _within(len(value), self.min_len, self.max_len):
            limit = _span(self.min_len, self.max_len)
            return [f"{path}={_show(value)} is {len(value)} characters long; allowed {limit} characters"]
        return []


@dataclass(frozen=True)
class Integer(Rule):
    low: int | None = None
    high: int | None = None

    def check(self, path: str, value: Any) -> list[str]:
        # bool is an int subclass in Python but not an integer in JSON: `seed: true` is a mistake.
        if isinstance(value, int) and not isinstance(value, bool) and _within(value, self.low, self.high):
            return []
        bounds = "" if self.low is None and self.high is None else f" in {_span(self.low, self.high)}"
        return [f"{path}={_show(value)} must be an integer{bounds}"]


@dataclass(frozen=True)
class Number(Rule):
    low: float
    high: float

    def check(self, path: str, value: Any) -> list[str]:
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and _within(value, self.low, self.high)
        ):
            return []
        return [f"{path}={_show(value)} must be a number in {self.low}..{self.high}"]


@dataclass(frozen=True)
class Boolean(Rule):
    def check(self, path: str, value: Any) -> list[str]:
        return [] if isinstance(value, bool) else [f"{path}={_show(value)} must be a boolean (true or false)"]


@dataclass(frozen=True)
class Choice(Rule):
    values: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    def check(self, path: str, value: Any) -> list[str]:
        if isinstance(value, str) and (value in self.values or value in self.aliases):
            return []
        allowed = ", ".join(self.values) + (f" or {', '.join(self.aliases)}" if self.aliases else "")
        return [f"{path}={_show(value)} is not allowed; use one of {allowed}"]


def _ratio_choice(*ratios: str, aliases: bool = True) -> Choice:
    """Accept these ratios and, where the model takes Magnific names, exactly the aliases for them."""
    names = tuple(a for r in ratios for a, ar in _RATIO_ALIASES.items() if ar == r) if aliases else ()
    return Choice(ratios, names)


@dataclass(frozen=True)
class ImageRef(Rule):
    """An http(s) URL or a data URI; models that sniff the format restrict extensions and MIME types."""

    extensions: tuple[str, ...] = ()
    data_types: tuple[str, ...] = ()

    def check(self, path: str, value: Any) -> list[str]:
        if isinstance(value, str) and (self._is_data_uri(value) or self._is_url(value)):
            return []
        ends = f" whose path ends in {', '.join(self.extensions)}" if self.extensions else ""
        data = ", ".join(self.data_types) if self.data_types else "an image type"
        return [f"{path}={_show(value)} must be an http(s) URL{ends}, or a data URI of {data}"]

    def _is_data_uri(self, value: str) -> bool:
        if value[:5].lower() != "data:":
            return False
        header, comma, payload = value[5:].partition(",")
        mime = header.split(";", 1)[0].strip().lower()
        allowed = mime in self.data_types if self.data_types else mime.startswith("image/")
        return bool(comma and payload and allowed)

    def _is_url(self, value: str) -> bool:
        try:
            parts = urlsplit(value)
        except ValueError:
            return False
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            return False
        # urlsplit already separated ?query and #fragment, so "a.png?sig=..." is judged by "a.png".
        return not self.extensions or parts.path.lower().endswith(self.extensions)


@dataclass(frozen=True)
class ListOf(Rule):
    item: Rule
    min_items: int = 0
    max_items: int | None = None

    def check(self, path: str, value: Any) -> list[str]:
        if not isinstance(value, list | tuple):
            return [f"{path}={_show(value)} must be a list"]
        problems = []
        if not _within(len(value), self.min_items, self.max_items):
            allowed = _span(self.min_items, self.max_items)
            problems.append(f"{path}={_show(value)} has {len(value)} items; allowed {allowed}")
        for index, item in enumerate(value):
            problems += self.item.check(f"{path}[{index}]", item)
        return problems


def _seconds(value: Any) -> int | None:
    """Kling durations arrive as "5" (upstream style) or 5 (natural in a DAG); both mean five seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class Duration(Rule):
    low: int
    high: int

    def check(self, path: str, value: Any) -> list[str]:
        seconds = _seconds(value)
        if seconds is not None and _within(seconds, self.low, self.high):
            return []
        return [
            f"{path}={_show(value)} must be a whole number of seconds in {self.low}..{self.high}, "
            f"as a string or an integer (e.g. '5')"
        ]


@dataclass(frozen=True)
class NotSupported(Rule):
    """A field a sibling model takes, rejected here with a pointer instead of a bare 'unknown field'."""

    reason: str

    def check(self, path: str, value: Any) -> list[str]:
        return [f"{path}={_show(value)} is not supported by this model; {self.reason}"]


@dataclass(frozen=True)
class Field:
    rule: Rule
    required: bool = False
    #: What the server assumes when the field is absent; output_dimensions reads it from here.
    default: Any = None


@dataclass(frozen=True)
class Obj(Rule):
    """A JSON object whose keys are all known: a typo such as ``aspect_ration`` must fail before spending."""

    fields: Mapping[str, Field]

    @property
    def allowed(self) -> list[str]:
        return [name for name, spec in self.fields.items() if not isinstance(spec.rule, NotSupported)]

    def check(self, path: str, value: Any) -> list[str]:
        if not isinstance(value, Mapping):
            return [f"{path}={_show(value)} must be an object (a mapping of field names to values)"]
        problems = []
        for name, spec in self.fields.items():
            # [I] null is treated as "not sent", as upstream (pydantic-style Optional) APIs usually do.
            if value.get(name) is None:
                if spec.required:
                    problems.append(f"{path}.{name} is required")
            else:
                problems += spec.rule.check(f"{path}.{name}", value[name])
        for name in value:
            if name not in self.fields:
                problems.append(self._unknown(f"{path}.{name}", str(name), value[name]))
        return problems

    def _unknown(self, path: str, name: str, value: Any) -> str:
        close = difflib.get_close_matches(name, self.allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{path}={_show(value)} is not a known field{hint}; allowed fields: {', '.join(self.allowed)}"


# --------------------------------------------------------------------------------------- cross-field rules

Check = Callable[[Mapping[str, Any]], list[str]]


def _count_images(value: Any) -> int:
    if isinstance(value, str):
        return 1
    return len(value) if isinstance(value, list | tuple) else 0


def _images_at_most(limit: int, *names: str) -> Check:
    """LiangXin caps reference images across several fields together, below the upstream limits [D]."""

    def check(inp: Mapping[str, Any]) -> list[str]:
        count = sum(_count_images(inp.get(name)) for name in names)
        if count <= limit:
            return []
        together = ", ".join(f"input.{name}" for name in names)
        return [f"{count} reference images were given; allowed at most {limit} across {together} together"]

    return check


def _width_and_height_together(inp: Mapping[str, Any]) -> list[str]:
    """flux-2-pro answers HTTP 400 when only one of width/height is sent [D]."""
    sent = [name for name in ("width", "height") if inp.get(name) is not None]
    if len(sent) != 1:
        return []
    missing = "height" if sent == ["width"] else "width"
    return [
        f"input.{sent[0]}={_show(inp[sent[0]])} was sent without input.{missing}; "
        f"send both (each 256..1440) or neither (default 1024x768)"
    ]


def _prompt_or_multi_prompt(inp: Mapping[str, Any]) -> list[str]:
    """A multi-shot Kling task carries its prompts per shot, so the top-level prompt becomes optional [U]."""
    if inp.get("prompt") is None and inp.get("multi_prompt") is None:
        return ["input.prompt is required (unless input.multi_prompt is given)"]
    return []


def _multi_prompt_total(inp: Mapping[str, Any]) -> list[str]:
    """Kling renders at most 15 s per task however the shots are split [U]."""
    shots = inp.get("multi_prompt")
    if not isinstance(shots, list | tuple):
        return []
    total = sum(_seconds(shot.get("duration")) or 0 for shot in shots if isinstance(shot, Mapping))
    if total <= 15:
        return []
    return [f"input.multi_prompt shot durations add up to {total} s; allowed at most 15 s in total"]


def _ignored(field: str, reason: str, applies: Callable[[Mapping[str, Any]], bool]) -> Check:
    """A warning, not an error: the server accepts the field but will not use it."""

    def check(inp: Mapping[str, Any]) -> list[str]:
        return [f"input.{field} is ignored: {reason}"] if inp.get(field) is not None and applies(inp) else []

    return check


def _sent(name: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda inp: inp.get(name) is not None


def _is_true(name: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda inp: inp.get(name) is True


# -------------------------------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Schema:
    input: Obj
    checks: tuple[Check, ...] = ()
    warnings: tuple[Check, ...] = ()
    video: bool = False


_ANY_IMAGE = ImageRef()
_TYPED_IMAGE = ImageRef((".png", ".jpg", ".jpeg", ".webp"), ("image/png", "image/jpeg", "image/webp"))
_FLAG = Field(Boolean())
_SEED = Field(Integer(0, MAX_SEED))  # [U] upstream range
_PROMPT = Field(Text(1), required=True)
_PROMPT_4096 = Field(Text(1, 4096), required=True)  # [U] upstream max

_EIGHT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")  # seedream and flux
_SEEDREAM = {
    "prompt": _PROMPT_4096,
    "aspect_ratio": Field(_ratio_choice(*_EIGHT_RATIOS), default="square_1_1"),
    "seed": _SEED,
    "enable_safety_checker": _FLAG,
}
_SEEDREAM_PIXELS = {  # §6, 4 MP
    "1:1": (2048, 2048),
    "4:3": (2364, 1774),
    "3:4": (1774, 2364),
    "16:9": (2730, 1536),
    "9:16": (1536, 2730),
    "3:2": (2508, 1672),
    "2:3": (1672, 2508),
    "21:9": (3062, 1312),
}

_Z_IMAGE_SIZES = {  # [U] Magnific sizes; LiangXin forwards image_size unchanged [D]
    "square": (512, 512),
    "square_hd": (1024, 1024),
    "portrait_3_4": (768, 1024),
    "portrait_9_16": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
# [I] The ratio -> size mapping is undocumented; these are the sizes with the same ratio. Only the numeric
# ratios the notes call "common" are accepted, not their Magnific aliases.
_Z_IMAGE_SIZE_FOR_RATIO = {
    "1:1": "square_hd",
    "16:9": "landscape_16_9",
    "9:16": "portrait_9_16",
    "4:3": "landscape_4_3",
    "3:4": "portrait_3_4",
}

_RESOLUTION_SCALE = {"1K": 1, "2K": 2, "4K": 4, "low": 1, "medium": 2, "high": 4}  # low/medium/high [I]
_NANO_BANANA = {
    "prompt": Field(Text(2, 3000), required=True),
    "image_input": Field(ListOf(_TYPED_IMAGE)),
    "reference_images": Field(ListOf(_TYPED_IMAGE)),
    "aspect_ratio": Field(
        _ratio_choice("1:1", "2:3", "3:2", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9"), default="1:1"
    ),
    "resolution": Field(Choice(tuple(_RESOLUTION_SCALE)), default="2K"),
    "output_format": Field(Choice(("png",))),
    "use_google_search_tool": Field(NotSupported("only nano-banana-pro-flash accepts it")),
}
_NANO_BANANA_CHECKS = (_images_at_most(3, "image_input", "reference_images"),)

_IMAGEN = {  # imagen4-fast has no LiangXin table; assumed identical to ultra, as upstream [I]
    "prompt": _PROMPT,
    "aspect_ratio": Field(_ratio_choice("1:1", "9:16", "16:9", "3:4", "4:3"), default="square_1_1"),
    "person_generation": Field(Choice(("dont_allow", "allow_adult", "allow_all"))),
    "safety_settings": Field(
        Choice(("block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"))
    ),
    "seed": Field(Integer(1, MAX_SEED)),
    "enhance_prompt": _FLAG,
    "language": Field(Choice(("auto", "en", "zh", "zh-CN", "hi", "ja", "ko", "pt", "es"))),
    "output_format": Field(Choice(("png", "jpeg", "jpg", "image/png", "image/jpeg"))),
    "compression_quality": Field(Integer(1, 100)),
}
_IMAGEN_WARNINGS = (
    _ignored("seed", "upstream ignores the seed when enhance_prompt is on", _is_true("enhance_prompt")),
)

_FLUX_SIDE = Field(Integer(256, 1440))
_FLUX_IMAGES = ("input_image", "input_image_2", "input_image_3", "input_image_4")
_FLUX = {
    "prompt": _PROMPT,
    "width": _FLUX_SIDE,
    "height": _FLUX_SIDE,
    "aspect_ratio": Field(_ratio_choice(*_EIGHT_RATIOS, aliases=False)),
    **{name: Field(_ANY_IMAGE) for name in _FLUX_IMAGES},
    "reference_images": Field(ListOf(_ANY_IMAGE)),
    "seed": Field(Integer()),  # no range documented
    "prompt_upsampling": _FLAG,
}

# [I] LiangXin's names are not captured; the upstream names are used and image_input is accepted as an alias,
# as on nano-banana. Entries are plain strings because upstream also takes raw base64.
_GEMINI = {
    "prompt": _PROMPT,
    "reference_images": Field(ListOf(Text(1))),
    "image_input": Field(ListOf(Text(1))),
    "aspect_ratio": Field(NotSupported("gemini-2.5-flash-image-preview has no aspect ratio control [U]")),
    "resolution": Field(NotSupported("gemini-2.5-flash-image-preview has no resolution control [U]")),
}

# [U] Magnific's kling-v3 names; LiangXin's names inside input are unconfirmed.
_KLING_SHOT = Obj(
    {
        "prompt": Field(Text(1, 2500), required=True),
        "duration": Field(Duration(1, 15), required=True),  # [I] per-shot minimum not documented
    }
)
_KLING_ELEMENT = Obj(
    {
        "reference_image_urls": Field(ListOf(_ANY_IMAGE)),
        "frontal_image_url": Field(_ANY_IMAGE),
    }
)
_KLING = {
    "prompt": Field(Text(1, 2500)),  # required unless multi_prompt: see _prompt_or_multi_prompt
    "multi_prompt": Field(ListOf(_KLING_SHOT, 1, 6)),
    "start_image_url": Field(_ANY_IMAGE),
    "end_image_url": Field(_ANY_IMAGE),
    "elements": Field(ListOf(_KLING_ELEMENT)),
    "generate_audio": _FLAG,
    "voice_ids": Field(ListOf(Text(1))),
    "multi_shot": _FLAG,
    "shot_type": Field(Choice(("customize",))),
    "aspect_ratio": Field(_ratio_choice("16:9", "9:16", "1:1", aliases=False), default="16:9"),
    "duration": Field(Duration(3, 15), default="5"),
    "negative_prompt": Field(Text(0)),
    "cfg_scale": Field(Number(0, 1), default=0.5),
}
_KLING_PIXELS = {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1080, 1080)}  # [I] "pro" = 1080p

_SCHEMAS: Mapping[str, Schema] = {
    "seedream-v4-5": Schema(Obj(_SEEDREAM)),
    # [I] field name and 1..5 limit from upstream; any URL or data URI, since upstream sniffs the content.
    "seedream-v4-5-edit": Schema(
        Obj({**_SEEDREAM, "reference_images": Field(ListOf(_ANY_IMAGE, 1, 5), required=True)})
    ),
    "seedream-v5-lite": Schema(Obj(_SEEDREAM)),  # [I] same fields as seedream-v4-5
    "z-image": Schema(
        Obj(
            {
                "prompt": _PROMPT_4096,
                "image_size": Field(Choice(tuple(_Z_IMAGE_SIZES)), default="square_hd"),
                "aspect_ratio": Field(Choice(tuple(_Z_IMAGE_SIZE_FOR_RATIO))),
                "seed": _SEED,
                "num_inference_steps": Field(Integer(1, 50)),  # [U]
                "output_format": Field(Choice(("png", "jpeg", "jpg", "webp"))),
                "enable_safety_checker": _FLAG,
            }
        ),
        warnings=(_ignored("aspect_ratio", "input.image_size is also set and wins", _sent("image_size")),),
    ),
    "nano-banana-pro": Schema(Obj(_NANO_BANANA), _NANO_BANANA_CHECKS),
    "nano-banana-pro-flash": Schema(
        Obj(
            {
                **_NANO_BANANA,
                "resolution": Field(Choice(tuple(_RESOLUTION_SCALE)), default="1K"),
                "use_google_search_tool": _FLAG,
            }
        ),
        _NANO_BANANA_CHECKS,
    ),
    "imagen4-ultra": Schema(Obj(_IMAGEN), warnings=_IMAGEN_WARNINGS),
    "imagen4-fast": Schema(Obj(_IMAGEN), warnings=_IMAGEN_WARNINGS),
    "flux-2-pro": Schema(
        Obj(_FLUX),
        (_width_and_height_together, _images_at_most(4, *_FLUX_IMAGES, "reference_images")),
        # [I] which one wins is undocumented; explicit dimensions are the more specific request.
        (_ignored("aspect_ratio", "input.width and input.height are set and win", _sent("width")),),
    ),
    "gemini-2.5-flash-image-preview": Schema(
        Obj(_GEMINI),
        (_images_at_most(3, "reference_images", "image_input"),),
    ),
    "kling-v3-pro": Schema(Obj(_KLING), (_prompt_or_multi_prompt, _multi_prompt_total), video=True),
}

KNOWN_MODELS: frozenset[str] = frozenset(_SCHEMAS)
VIDEO_MODELS: frozenset[str] = frozenset(name for name, schema in _SCHEMAS.items() if schema.video)


def is_video_model(model: str) -> bool:
    return model in VIDEO_MODELS


def validate_input(model: str, input: Mapping[str, Any], *, strict: bool = False) -> list[str]:
    """Reject an input the server would reject, before money is spent; return warnings for accepted oddities.

    An unknown model passes through with a warning unless ``strict``: LiangXin adds models faster than this
    table, and the server remains the final judge.
    """
    if not isinstance(input, Mapping):
        raise InputValidationError(
            model, [f"input={_show(input)} must be an object (a mapping of field names to values)"]
        )
    schema = _SCHEMAS.get(model)
    if schema is None:
        if strict:
            raise InputValidationError(
                model, [f"unknown model {model!r}; known models: {', '.join(sorted(KNOWN_MODELS))}"]
            )
        return [f"unknown model {model!r}, input passed through unvalidated"]
    problems = schema.input.check("input", input)
    for check in schema.checks:
        problems += check(input)
    if problems:
        raise InputValidationError(model, problems)
    return [warning for check in schema.warnings for warning in check(input)]


# ------------------------------------------------------------------------------------------ output sizes


def _value(model: str, inp: Mapping[str, Any], name: str) -> Any:
    value = inp.get(name)
    return value if value is not None else _SCHEMAS[model].input.fields[name].default


def _z_image_size(model: str, inp: Mapping[str, Any]) -> tuple[int, int]:
    size = inp.get("image_size")
    if size is None and inp.get("aspect_ratio") is not None:
        size = _Z_IMAGE_SIZE_FOR_RATIO[normalize_aspect_ratio(inp["aspect_ratio"])]
    return _Z_IMAGE_SIZES[size or _value(model, inp, "image_size")]


def _flux_size(model: str, inp: Mapping[str, Any]) -> tuple[int, int]:
    if inp.get("width") is not None and inp.get("height") is not None:
        return int(inp["width"]), int(inp["height"])
    if inp.get("aspect_ratio") is not None:
        return _fit(normalize_aspect_ratio(inp["aspect_ratio"]), 1024)  # [I] mapping undocumented
    return 1024, 768


def _nano_banana_size(model: str, inp: Mapping[str, Any]) -> tuple[int, int]:
    # [I] 1K means ~1024 px on the long side; 2K and 4K scale it (the Gemini image API's convention).
    long_side = 1024 * _RESOLUTION_SCALE[_value(model, inp, "resolution")]
    return _fit(normalize_aspect_ratio(_value(model, inp, "aspect_ratio")), long_side)


_SIZERS: Mapping[str, Callable[[str, Mapping[str, Any]], tuple[int, int]]] = {
    **{
        name: lambda m, i: _SEEDREAM_PIXELS[normalize_aspect_ratio(_value(m, i, "aspect_ratio"))]
        for name in ("seedream-v4-5", "seedream-v4-5-edit", "seedream-v5-lite")
    },
    "z-image": _z_image_size,
    "flux-2-pro": _flux_size,
    "nano-banana-pro": _nano_banana_size,
    "nano-banana-pro-flash": _nano_banana_size,
    # [I] Imagen's pixel sizes are not documented; ~1024 on the long side.
    **{
        name: lambda m, i: _fit(normalize_aspect_ratio(_value(m, i, "aspect_ratio")), 1024)
        for name in ("imagen4-ultra", "imagen4-fast")
    },
    "gemini-2.5-flash-image-preview": lambda m, i: (1024, 1024),  # [I] no ratio control, square output
    "kling-v3-pro": lambda m, i: _KLING_PIXELS[normalize_aspect_ratio(_value(m, i, "aspect_ratio"))],
}


def output_dimensions(model: str, input: Mapping[str, Any]) -> tuple[int, int]:
    """(width, height) the API would produce, so the simulator fakes realistic images. Assumes valid input."""
    sizer = _SIZERS.get(model)
    return sizer(model, input) if sizer else (1024, 1024)


# ------------------------------------------------------------------------------------------- typed helpers


def _plain(value: Any) -> Any:
    """Tuples become lists and mappings dicts, so the result is JSON-ready and equals what was passed in."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


class _Input:
    """Typed builders give DAG authors autocompletion; None means "not sent", so it is dropped."""

    #: The models whose schemas this helper's fields mirror (the union of their fields, none more).
    models: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(value) for name, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class SeedreamInput(_Input):
    """For seedream-v4-5, seedream-v5-lite and (with reference_images) seedream-v4-5-edit."""

    models: ClassVar[tuple[str, ...]] = ("seedream-v4-5", "seedream-v5-lite", "seedream-v4-5-edit")

    prompt: str
    aspect_ratio: str | None = None
    seed: int | None = None
    enable_safety_checker: bool | None = None
    reference_images: Sequence[str] | None = None


@dataclass(frozen=True)
class ZImageInput(_Input):
    models: ClassVar[tuple[str, ...]] = ("z-image",)

    prompt: str
    image_size: str | None = None
    aspect_ratio: str | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    output_format: str | None = None
    enable_safety_checker: bool | None = None


@dataclass(frozen=True)
class NanoBananaInput(_Input):
    """For nano-banana-pro and nano-banana-pro-flash (use_google_search_tool is flash only)."""

    models: ClassVar[tuple[str, ...]] = ("nano-banana-pro", "nano-banana-pro-flash")

    prompt: str
    image_input: Sequence[str] | None = None
    reference_images: Sequence[str] | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    output_format: str | None = None
    use_google_search_tool: bool | None = None


@dataclass(frozen=True)
class ImagenInput(_Input):
    models: ClassVar[tuple[str, ...]] = ("imagen4-ultra", "imagen4-fast")

    prompt: str
    aspect_ratio: str | None = None
    person_generation: str | None = None
    safety_settings: str | None = None
    seed: int | None = None
    enhance_prompt: bool | None = None
    language: str | None = None
    output_format: str | None = None
    compression_quality: int | None = None


@dataclass(frozen=True)
class FluxInput(_Input):
    models: ClassVar[tuple[str, ...]] = ("flux-2-pro",)

    prompt: str
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    input_image: str | None = None
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    reference_images: Sequence[str] | None = None
    seed: int | None = None
    prompt_upsampling: bool | None = None


@dataclass(frozen=True)
class KlingInput(_Input):
    models: ClassVar[tuple[str, ...]] = ("kling-v3-pro",)

    prompt: str | None = None
    multi_prompt: Sequence[Mapping[str, Any]] | None = None
    start_image_url: str | None = None
    end_image_url: str | None = None
    elements: Sequence[Mapping[str, Any]] | None = None
    generate_audio: bool | None = None
    voice_ids: Sequence[str] | None = None
    multi_shot: bool | None = None
    shot_type: str | None = None
    aspect_ratio: str | None = None
    duration: str | int | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
