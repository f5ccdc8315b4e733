"""Per-model input rules: what the operator rejects before spending, and the simulator rejects as well."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_liangxin.models import (
    KNOWN_MODELS,
    VIDEO_MODELS,
    FluxInput,
    ImagenInput,
    InputValidationError,
    KlingInput,
    NanoBananaInput,
    SeedreamInput,
    ZImageInput,
    is_video_model,
    normalize_aspect_ratio,
    output_dimensions,
    validate_input,
)

PNG = "https://cdn.example.com/a.png"
DATA_PNG = "data:image/png;base64,iVBORw0KGgo="
LONG = "x" * 5000


def problems_of(model: str, inp: Any) -> list[str]:
    with pytest.raises(InputValidationError) as info:
        validate_input(model, inp)
    assert info.value.model == model
    return info.value.problems


# ----------------------------------------------------------------------------------------------- valid inputs

VALID: list[tuple[str, dict[str, Any]]] = [
    ("seedream-v4-5", {"prompt": "a cat"}),
    (
        "seedream-v4-5",
        {"prompt": "a cat", "aspect_ratio": "widescreen_16_9", "seed": 0, "enable_safety_checker": False},
    ),
    ("seedream-v4-5", {"prompt": "x" * 4096, "aspect_ratio": "21:9", "seed": 4294967295}),
    ("seedream-v4-5", {"prompt": "a cat", "aspect_ratio": "cinematic_21_9", "seed": None}),
    ("seedream-v4-5-edit", {"prompt": "poster", "reference_images": [PNG]}),
    ("seedream-v4-5-edit", {"prompt": "poster", "reference_images": [PNG, DATA_PNG, "http://h/x", PNG, PNG]}),
    ("seedream-v5-lite", {"prompt": "wallpaper", "aspect_ratio": "portrait_2_3", "seed": 7}),
    ("z-image", {"prompt": "a fox", "image_size": "square_hd", "seed": 12345, "num_inference_steps": 8}),
    ("z-image", {"prompt": "a fox", "aspect_ratio": "16:9", "output_format": "webp"}),
    ("z-image", {"prompt": "a fox", "num_inference_steps": 1, "enable_safety_checker": True}),
    ("z-image", {"prompt": "a fox", "num_inference_steps": 50, "output_format": "jpg"}),
    ("nano-banana-pro", {"prompt": "ok"}),
    ("nano-banana-pro", {"prompt": "x" * 3000, "resolution": "4K", "aspect_ratio": "social_post_4_5"}),
    (
        "nano-banana-pro",
        {
            "prompt": "mix",
            "image_input": ["https://h/a.JPG?sig=abc", DATA_PNG],
            "reference_images": ["data:image/webp;base64,AAAA"],
            "output_format": "png",
            "aspect_ratio": "5:4",
            "resolution": "medium",
        },
    ),
    ("nano-banana-pro-flash", {"prompt": "news", "use_google_search_tool": True, "resolution": "1K"}),
    ("imagen4-ultra", {"prompt": "a lake"}),
    (
        "imagen4-ultra",
        {
            "prompt": "a lake",
            "aspect_ratio": "traditional_3_4",
            "person_generation": "allow_all",
            "safety_settings": "block_none",
            "seed": 1,
            "enhance_prompt": False,
            "language": "zh-CN",
            "output_format": "image/jpeg",
            "compression_quality": 100,
        },
    ),
    ("imagen4-fast", {"prompt": "a lake", "aspect_ratio": "9:16", "compression_quality": 1}),
    ("flux-2-pro", {"prompt": "a robot"}),
    ("flux-2-pro", {"prompt": "a robot", "width": 256, "height": 1440, "seed": 3, "prompt_upsampling": True}),
    ("flux-2-pro", {"prompt": "a robot", "aspect_ratio": "3:2"}),
    (
        "flux-2-pro",
        {"prompt": "a robot", "input_image": PNG, "input_image_4": DATA_PNG, "reference_images": [PNG, PNG]},
    ),
    ("gemini-2.5-flash-image-preview", {"prompt": "restyle the room"}),
    (
        "gemini-2.5-flash-image-preview",
        {"prompt": "restyle", "reference_images": [PNG, "iVBORw0KGgo="], "image_input": [PNG]},
    ),
    ("kling-v3-pro", {"prompt": "a coffee commercial"}),
    (
        "kling-v3-pro",
        {
            "prompt": "a coffee commercial",
            "start_image_url": PNG,
            "end_image_url": DATA_PNG,
            "generate_audio": True,
            "aspect_ratio": "9:16",
            "duration": 15,
            "negative_prompt": "",
            "cfg_scale": 0,
            "voice_ids": ["v1"],
            "elements": [{"reference_image_urls": [PNG], "frontal_image_url": PNG}],
        },
    ),
    (
        "kling-v3-pro",
        {
            "multi_prompt": [{"prompt": "shot one", "duration": "5"}, {"prompt": "shot two", "duration": 10}],
            "multi_shot": True,
            "shot_type": "customize",
            "duration": "3",
            "cfg_scale": 1.0,
        },
    ),
]


@pytest.mark.parametrize(("model", "inp"), VALID)
def test_valid_input_passes(model: str, inp: dict[str, Any]) -> None:
    assert validate_input(model, inp) == []
    assert validate_input(model, inp, strict=True) == []


# --------------------------------------------------------------------------------------------- invalid inputs

# (model, input, field named in the problem, another fragment the message must contain)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # seedream family
    ("seedream-v4-5", {}, "input.prompt", "is required"),
    ("seedream-v4-5", {"prompt": None}, "input.prompt", "is required"),
    ("seedream-v4-5", {"prompt": ""}, "input.prompt", "must not be empty"),
    ("seedream-v4-5", {"prompt": "   "}, "input.prompt", "must not be empty"),
    ("seedream-v4-5", {"prompt": 42}, "input.prompt", "must be a string"),
    ("seedream-v4-5", {"prompt": "x" * 4097}, "input.prompt", "4097 characters long; allowed 1..4096"),
    ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "17:9"}, "input.aspect_ratio='17:9'", "square_1_1"),
    ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "5:4"}, "input.aspect_ratio", "not allowed"),
    ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "social_5_4"}, "input.aspect_ratio", "not allowed"),
    ("seedream-v4-5", {"prompt": "a", "seed": True}, "input.seed=True", "integer in 0..4294967295"),
    ("seedream-v4-5", {"prompt": "a", "seed": -1}, "input.seed=-1", "integer"),
    ("seedream-v4-5", {"prompt": "a", "seed": 4294967296}, "input.seed", "integer"),
    ("seedream-v4-5", {"prompt": "a", "seed": "7"}, "input.seed='7'", "integer"),
    ("seedream-v4-5", {"prompt": "a", "seed": 1.5}, "input.seed", "integer"),
    (
        "seedream-v4-5",
        {"prompt": "a", "enable_safety_checker": "no"},
        "input.enable_safety_checker",
        "boolean",
    ),
    ("seedream-v4-5", {"prompt": "a", "aspect_ration": "16:9"}, "input.aspect_ration", "'aspect_ratio'"),
    ("seedream-v4-5", {"prompt": "a", "reference_images": [PNG]}, "input.reference_images", "not a known"),
    ("seedream-v4-5-edit", {"prompt": "a"}, "input.reference_images", "is required"),
    ("seedream-v4-5-edit", {"prompt": "a", "reference_images": []}, "input.reference_images", "allowed 1..5"),
    (
        "seedream-v4-5-edit",
        {"prompt": "a", "reference_images": [PNG] * 6},
        "input.reference_images",
        "6 items",
    ),
    (
        "seedream-v4-5-edit",
        {"prompt": "a", "reference_images": PNG},
        "input.reference_images",
        "must be a list",
    ),
    ("seedream-v4-5-edit", {"prompt": "a", "reference_images": ["/tmp/a.png"]}, "reference_images[0]", "URL"),
    (
        "seedream-v4-5-edit",
        {"prompt": "a", "reference_images": ["ftp://h/a.png"]},
        "reference_images[0]",
        "URL",
    ),
    ("seedream-v4-5-edit", {"prompt": "a", "reference_images": ["data:text/plain,hi"]}, "[0]", "data URI"),
    ("seedream-v5-lite", {"prompt": "a", "aspect_ratio": "1:2"}, "input.aspect_ratio", "cinematic_21_9"),
    ("seedream-v5-lite", {"aspect_ratio": "1:1"}, "input.prompt", "is required"),
    # z-image
    ("z-image", {"prompt": "a", "image_size": "huge"}, "input.image_size='huge'", "square_hd"),
    ("z-image", {"prompt": "a", "aspect_ratio": "21:9"}, "input.aspect_ratio", "1:1, 16:9, 9:16, 4:3, 3:4"),
    ("z-image", {"prompt": "a", "num_inference_steps": 0}, "input.num_inference_steps", "1..50"),
    ("z-image", {"prompt": "a", "num_inference_steps": 51}, "input.num_inference_steps", "1..50"),
    ("z-image", {"prompt": "a", "output_format": "gif"}, "input.output_format='gif'", "webp"),
    ("z-image", {"prompt": "a", "seed": -5}, "input.seed", "0..4294967295"),
    ("z-image", {"prompt": "x" * 4097}, "input.prompt", "1..4096"),
    # nano-banana
    ("nano-banana-pro", {"prompt": "a"}, "input.prompt='a'", "allowed 2..3000"),
    ("nano-banana-pro", {"prompt": "x" * 3001}, "input.prompt", "3001 characters"),
    ("nano-banana-pro", {"prompt": "ok", "aspect_ratio": "2:1"}, "input.aspect_ratio", "social_post_4_5"),
    ("nano-banana-pro", {"prompt": "ok", "resolution": "8K"}, "input.resolution='8K'", "1K, 2K, 4K"),
    ("nano-banana-pro", {"prompt": "ok", "output_format": "jpeg"}, "input.output_format", "use one of png"),
    ("nano-banana-pro", {"prompt": "ok", "use_google_search_tool": True}, "use_google_search_tool", "flash"),
    ("nano-banana-pro", {"prompt": "ok", "image_input": ["https://h/a.gif"]}, "image_input[0]", ".webp"),
    ("nano-banana-pro", {"prompt": "ok", "image_input": ["https://h/png"]}, "image_input[0]", ".png"),
    (
        "nano-banana-pro",
        {"prompt": "ok", "reference_images": ["data:image/gif;base64,R0"]},
        "[0]",
        "image/webp",
    ),
    (
        "nano-banana-pro",
        {"prompt": "ok", "reference_images": [PNG] * 4},
        "input.reference_images",
        "at most 3",
    ),
    (
        "nano-banana-pro",
        {"prompt": "ok", "image_input": [PNG, PNG], "reference_images": [PNG, PNG]},
        "input.image_input",
        "4 reference images",
    ),
    (
        "nano-banana-pro-flash",
        {"prompt": "ok", "use_google_search_tool": "yes"},
        "use_google_search_tool",
        "bool",
    ),
    (
        "nano-banana-pro-flash",
        {"prompt": "ok", "resolution": "ultra"},
        "input.resolution",
        "low, medium, high",
    ),
    # imagen
    ("imagen4-ultra", {"prompt": ""}, "input.prompt", "must not be empty"),
    ("imagen4-ultra", {"prompt": "a", "aspect_ratio": "3:2"}, "input.aspect_ratio", "classic_4_3"),
    ("imagen4-ultra", {"prompt": "a", "aspect_ratio": "standard_3_2"}, "input.aspect_ratio", "not allowed"),
    (
        "imagen4-ultra",
        {"prompt": "a", "person_generation": "everyone"},
        "input.person_generation",
        "allow_all",
    ),
    ("imagen4-ultra", {"prompt": "a", "safety_settings": "strict"}, "input.safety_settings", "block_none"),
    ("imagen4-ultra", {"prompt": "a", "seed": 0}, "input.seed=0", "1..4294967295"),
    ("imagen4-ultra", {"prompt": "a", "enhance_prompt": 1}, "input.enhance_prompt", "boolean"),
    ("imagen4-ultra", {"prompt": "a", "language": "fr"}, "input.language='fr'", "zh-CN"),
    ("imagen4-ultra", {"prompt": "a", "output_format": "webp"}, "input.output_format", "image/jpeg"),
    ("imagen4-fast", {"prompt": "a", "compression_quality": 0}, "input.compression_quality", "1..100"),
    ("imagen4-fast", {"prompt": "a", "compression_quality": 101}, "input.compression_quality", "1..100"),
    # flux
    ("flux-2-pro", {"prompt": "a", "width": 1024}, "input.width=1024", "without input.height"),
    ("flux-2-pro", {"prompt": "a", "height": 768}, "input.height=768", "without input.width"),
    ("flux-2-pro", {"prompt": "a", "width": 255, "height": 512}, "input.width=255", "256..1440"),
    ("flux-2-pro", {"prompt": "a", "width": 512, "height": 1441}, "input.height=1441", "256..1440"),
    ("flux-2-pro", {"prompt": "a", "aspect_ratio": "widescreen_16_9"}, "input.aspect_ratio", "21:9"),
    ("flux-2-pro", {"prompt": "a", "seed": "1"}, "input.seed", "integer"),
    ("flux-2-pro", {"prompt": "a", "prompt_upsampling": "true"}, "input.prompt_upsampling", "boolean"),
    ("flux-2-pro", {"prompt": "a", "input_image": "not a url"}, "input.input_image", "http(s) URL"),
    ("flux-2-pro", {"prompt": "a", "input_image_5": PNG}, "input.input_image_5", "not a known field"),
    (
        "flux-2-pro",
        {"prompt": "a", "input_image": PNG, "input_image_2": PNG, "reference_images": [PNG, PNG, PNG]},
        "input.reference_images",
        "5 reference images were given; allowed at most 4",
    ),
    # gemini
    ("gemini-2.5-flash-image-preview", {}, "input.prompt", "is required"),
    (
        "gemini-2.5-flash-image-preview",
        {"prompt": "a", "aspect_ratio": "1:1"},
        "input.aspect_ratio",
        "no aspect",
    ),
    (
        "gemini-2.5-flash-image-preview",
        {"prompt": "a", "resolution": "2K"},
        "input.resolution",
        "not supported",
    ),
    (
        "gemini-2.5-flash-image-preview",
        {"prompt": "a", "reference_images": [PNG, PNG], "image_input": [PNG, PNG]},
        "input.image_input",
        "at most 3",
    ),
    (
        "gemini-2.5-flash-image-preview",
        {"prompt": "a", "reference_images": [""]},
        "reference_images[0]",
        "empty",
    ),
    # kling
    ("kling-v3-pro", {}, "input.prompt is required", "multi_prompt"),
    ("kling-v3-pro", {"prompt": "x" * 2501}, "input.prompt", "1..2500"),
    ("kling-v3-pro", {"prompt": "a", "duration": "2"}, "input.duration='2'", "3..15"),
    ("kling-v3-pro", {"prompt": "a", "duration": 16}, "input.duration=16", "3..15"),
    ("kling-v3-pro", {"prompt": "a", "duration": "5s"}, "input.duration", "seconds"),
    ("kling-v3-pro", {"prompt": "a", "duration": True}, "input.duration", "seconds"),
    ("kling-v3-pro", {"prompt": "a", "aspect_ratio": "4:3"}, "input.aspect_ratio", "16:9, 9:16, 1:1"),
    ("kling-v3-pro", {"prompt": "a", "cfg_scale": 1.5}, "input.cfg_scale=1.5", "0..1"),
    ("kling-v3-pro", {"prompt": "a", "cfg_scale": float("nan")}, "input.cfg_scale", "number"),
    ("kling-v3-pro", {"prompt": "a", "shot_type": "auto"}, "input.shot_type='auto'", "customize"),
    ("kling-v3-pro", {"prompt": "a", "voice_ids": "v1"}, "input.voice_ids", "must be a list"),
    ("kling-v3-pro", {"prompt": "a", "voice_ids": [1]}, "input.voice_ids[0]", "string"),
    ("kling-v3-pro", {"prompt": "a", "start_image_url": "a.png"}, "input.start_image_url", "URL"),
    ("kling-v3-pro", {"prompt": "a", "generate_audio": "on"}, "input.generate_audio", "boolean"),
    (
        "kling-v3-pro",
        {"prompt": "a", "elements": [{"frontal_image_url": 3}]},
        "elements[0].frontal_image_url",
        "URL",
    ),
    ("kling-v3-pro", {"prompt": "a", "elements": ["x"]}, "input.elements[0]", "must be an object"),
    ("kling-v3-pro", {"multi_prompt": []}, "input.multi_prompt", "allowed 1..6"),
    ("kling-v3-pro", {"multi_prompt": [{"prompt": "s", "duration": 1}] * 7}, "input.multi_prompt", "7 items"),
    ("kling-v3-pro", {"multi_prompt": [{"prompt": "s"}]}, "input.multi_prompt[0].duration", "is required"),
    ("kling-v3-pro", {"multi_prompt": [{"duration": 3}]}, "input.multi_prompt[0].prompt", "is required"),
    (
        "kling-v3-pro",
        {"multi_prompt": [{"prompt": "s", "duration": 3, "camera": "pan"}]},
        "[0].camera",
        "prompt,",
    ),
    (
        "kling-v3-pro",
        {"multi_prompt": [{"prompt": "a", "duration": "10"}, {"prompt": "b", "duration": 6}]},
        "input.multi_prompt",
        "add up to 16 s; allowed at most 15",
    ),
]


@pytest.mark.parametrize(("model", "inp", "field", "fragment"), INVALID)
def test_invalid_input_names_the_field(model: str, inp: dict[str, Any], field: str, fragment: str) -> None:
    problems = problems_of(model, inp)
    assert len(problems) == 1, problems
    assert field in problems[0]
    assert fragment in problems[0]


def test_every_known_model_has_valid_and_invalid_cases() -> None:
    assert {model for model, _ in VALID} == KNOWN_MODELS
    assert {case[0] for case in INVALID} == KNOWN_MODELS


# ---------------------------------------------------------------------------------------------- the messages


def test_error_message_format_and_all_problems_reported() -> None:
    inp = {"aspect_ratio": "17:9", "seed": -1, "enable_safety_checker": "yes", "aspect_ration": "1:1"}
    with pytest.raises(InputValidationError) as info:
        validate_input("seedream-v4-5", inp)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.problems == [
        "input.prompt is required",
        "input.aspect_ratio='17:9' is not allowed; use one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 21:9 or "
        "square_1_1, widescreen_16_9, social_story_9_16, classic_4_3, traditional_3_4, standard_3_2, "
        "portrait_2_3, cinematic_21_9",
        "input.seed=-1 must be an integer in 0..4294967295",
        "input.enable_safety_checker='yes' must be a boolean (true or false)",
        "input.aspect_ration='1:1' is not a known field (did you mean 'aspect_ratio'?); "
        "allowed fields: prompt, aspect_ratio, seed, enable_safety_checker",
    ]
    assert str(error) == "Invalid input for LiangXin model 'seedream-v4-5': " + "; ".join(error.problems)


def test_cross_field_and_field_problems_are_reported_together() -> None:
    problems = problems_of("flux-2-pro", {"prompt": "", "width": 100, "reference_images": [PNG] * 5})
    assert len(problems) == 4
    assert any(p.startswith("input.prompt=''") for p in problems)
    assert any(p.startswith("input.width=100 must be an integer in 256..1440") for p in problems)
    assert any("without input.height" in p for p in problems)
    assert any("5 reference images" in p for p in problems)


def test_bad_values_are_truncated_in_messages() -> None:
    (problem,) = problems_of("seedream-v4-5", {"prompt": LONG})
    shown = problem.split("=", 1)[1].split(" is ", 1)[0]
    assert len(shown) == 60
    assert shown.endswith("...")
    assert "5000 characters long" in problem


def test_error_survives_pickling() -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input("z-image", {})
    clone = pickle.loads(pickle.dumps(info.value))
    assert (clone.model, clone.problems, str(clone)) == (
        info.value.model,
        info.value.problems,
        str(info.value),
    )


# --------------------------------------------------------------------------------------- models and warnings


def test_unknown_model_warns_unless_strict() -> None:
    assert validate_input("some-new-model", {"anything": 1}) == [
        "unknown model 'some-new-model', input passed through unvalidated"
    ]
    with pytest.raises(InputValidationError, match="unknown model 'some-new-model'; known models: flux-"):
        validate_input("some-new-model", {"anything": 1}, strict=True)


@pytest.mark.parametrize("model", ["seedream-v4-5", "some-new-model"])
@pytest.mark.parametrize("bad", [None, "prompt", ["prompt"], 3])
def test_input_must_be_a_mapping(model: str, bad: Any) -> None:
    with pytest.raises(InputValidationError, match="must be an object"):
        validate_input(model, bad)


@pytest.mark.parametrize(
    ("model", "inp", "warning"),
    [
        (
            "z-image",
            {"prompt": "a", "image_size": "square", "aspect_ratio": "16:9"},
            "input.aspect_ratio is ignored",
        ),
        (
            "flux-2-pro",
            {"prompt": "a", "width": 512, "height": 512, "aspect_ratio": "1:1"},
            "input.aspect_ratio",
        ),
        ("imagen4-ultra", {"prompt": "a", "seed": 5, "enhance_prompt": True}, "input.seed is ignored"),
    ],
)
def test_accepted_but_ignored_fields_warn(model: str, inp: dict[str, Any], warning: str) -> None:
    warnings = validate_input(model, inp)
    assert len(warnings) == 1
    assert warnings[0].startswith(warning)


def test_imagen_seed_without_enhance_prompt_does_not_warn() -> None:
    assert validate_input("imagen4-ultra", {"prompt": "a", "seed": 5, "enhance_prompt": False}) == []


def test_video_models() -> None:
    assert {"kling-v3-pro"} == VIDEO_MODELS
    assert VIDEO_MODELS < KNOWN_MODELS
    assert is_video_model("kling-v3-pro")
    assert not is_video_model("seedream-v4-5")
    assert not is_video_model("no-such-model")


# -------------------------------------------------------------------------------------------- aspect ratios


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("16:9", "16:9"),
        ("widescreen_16_9", "16:9"),
        ("square_1_1", "1:1"),
        ("social_post_4_5", "4:5"),
        ("cinematic_21_9", "21:9"),
        ("portrait_2_3", "2:3"),
        ("vertical_1_2", "1:2"),
    ],
)
def test_normalize_aspect_ratio(value: str, canonical: str) -> None:
    assert normalize_aspect_ratio(value) == canonical


@pytest.mark.parametrize("value", ["17:9", "16/9", "", "WIDESCREEN_16_9", "film_horizontal_21_9", 1.5])
def test_normalize_aspect_ratio_rejects_unknown(value: Any) -> None:
    with pytest.raises(ValueError, match="unknown aspect ratio"):
        normalize_aspect_ratio(value)


# ---------------------------------------------------------------------------------------- output dimensions


@pytest.mark.parametrize(
    ("model", "inp", "size"),
    [
        ("seedream-v4-5", {"prompt": "a"}, (2048, 2048)),
        ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "16:9"}, (2730, 1536)),
        ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "widescreen_16_9"}, (2730, 1536)),
        ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "social_story_9_16"}, (1536, 2730)),
        ("seedream-v5-lite", {"prompt": "a", "aspect_ratio": "classic_4_3"}, (2364, 1774)),
        ("seedream-v5-lite", {"prompt": "a", "aspect_ratio": "3:4"}, (1774, 2364)),
        ("seedream-v4-5-edit", {"prompt": "a", "aspect_ratio": "cinematic_21_9"}, (3062, 1312)),
        ("seedream-v4-5-edit", {"prompt": "a", "aspect_ratio": "2:3"}, (1672, 2508)),
        ("seedream-v4-5", {"prompt": "a", "aspect_ratio": "standard_3_2"}, (2508, 1672)),
        ("z-image", {"prompt": "a"}, (1024, 1024)),
        ("z-image", {"prompt": "a", "image_size": "square"}, (512, 512)),
        ("z-image", {"prompt": "a", "image_size": "portrait_9_16"}, (576, 1024)),
        ("z-image", {"prompt": "a", "aspect_ratio": "16:9"}, (1024, 576)),
        ("z-image", {"prompt": "a", "aspect_ratio": "3:4"}, (768, 1024)),
        ("z-image", {"prompt": "a", "image_size": "landscape_4_3", "aspect_ratio": "9:16"}, (1024, 768)),
        ("flux-2-pro", {"prompt": "a"}, (1024, 768)),
        ("flux-2-pro", {"prompt": "a", "width": 1440, "height": 256}, (1440, 256)),
        ("flux-2-pro", {"prompt": "a", "width": 800, "height": 600, "aspect_ratio": "9:16"}, (800, 600)),
        ("flux-2-pro", {"prompt": "a", "aspect_ratio": "16:9"}, (1024, 576)),
        ("flux-2-pro", {"prompt": "a", "aspect_ratio": "2:3"}, (688, 1024)),
        ("nano-banana-pro-flash", {"prompt": "ok"}, (1024, 1024)),
        ("nano-banana-pro-flash", {"prompt": "ok", "aspect_ratio": "widescreen_16_9"}, (1024, 576)),
        ("nano-banana-pro", {"prompt": "ok"}, (2048, 2048)),
        ("nano-banana-pro", {"prompt": "ok", "resolution": "1K", "aspect_ratio": "4:5"}, (816, 1024)),
        ("nano-banana-pro", {"prompt": "ok", "resolution": "high", "aspect_ratio": "9:16"}, (2304, 4096)),
        ("imagen4-ultra", {"prompt": "a"}, (1024, 1024)),
        ("imagen4-fast", {"prompt": "a", "aspect_ratio": "classic_4_3"}, (1024, 768)),
        ("gemini-2.5-flash-image-preview", {"prompt": "a"}, (1024, 1024)),
        ("kling-v3-pro", {"prompt": "a"}, (1920, 1080)),
        ("kling-v3-pro", {"prompt": "a", "aspect_ratio": "9:16"}, (1080, 1920)),
        ("unknown-model", {"prompt": "a", "aspect_ratio": "16:9"}, (1024, 1024)),
    ],
)
def test_output_dimensions(model: str, inp: dict[str, Any], size: tuple[int, int]) -> None:
    assert output_dimensions(model, inp) == size


@pytest.mark.parametrize("model", sorted(KNOWN_MODELS))
def test_output_dimensions_defined_for_every_valid_case(model: str) -> None:
    for case_model, inp in VALID:
        if case_model == model:
            width, height = output_dimensions(model, inp)
            assert width >= 256
            assert height >= 256


# -------------------------------------------------------------------------------------------- typed helpers


def test_typed_helper_drops_none() -> None:
    assert SeedreamInput(prompt="x", aspect_ratio="16:9").to_dict() == {"prompt": "x", "aspect_ratio": "16:9"}


@pytest.mark.parametrize(
    ("model", "helper", "data"),
    [
        ("seedream-v4-5", SeedreamInput, {"prompt": "x", "aspect_ratio": "16:9", "seed": 0}),
        ("seedream-v4-5-edit", SeedreamInput, {"prompt": "x", "reference_images": [PNG]}),
        ("z-image", ZImageInput, {"prompt": "x", "image_size": "square", "num_inference_steps": 8}),
        (
            "nano-banana-pro-flash",
            NanoBananaInput,
            {"prompt": "xy", "image_input": [PNG], "use_google_search_tool": False},
        ),
        ("imagen4-ultra", ImagenInput, {"prompt": "x", "language": "ja", "compression_quality": 80}),
        ("flux-2-pro", FluxInput, {"prompt": "x", "width": 512, "height": 512, "input_image_2": PNG}),
        ("kling-v3-pro", KlingInput, {"multi_prompt": [{"prompt": "a", "duration": "5"}], "cfg_scale": 0.5}),
    ],
)
def test_typed_helper_round_trips_and_validates(model: str, helper: type, data: dict[str, Any]) -> None:
    built = helper(**data)
    assert built.to_dict() == data
    assert helper(**built.to_dict()) == built
    assert validate_input(model, built.to_dict()) == []


def test_typed_helper_turns_tuples_into_lists() -> None:
    assert NanoBananaInput(prompt="xy", reference_images=(PNG, DATA_PNG)).to_dict() == {
        "prompt": "xy",
        "reference_images": [PNG, DATA_PNG],
    }


@pytest.mark.parametrize(
    ("helper", "models"),
    [
        (SeedreamInput, ["seedream-v4-5-edit"]),
        (ZImageInput, ["z-image"]),
        (NanoBananaInput, ["nano-banana-pro-flash"]),
        (ImagenInput, ["imagen4-ultra", "imagen4-fast"]),
        (FluxInput, ["flux-2-pro"]),
        (KlingInput, ["kling-v3-pro"]),
    ],
)
def test_typed_helpers_only_offer_fields_the_schema_accepts(helper: Any, models: list[str]) -> None:
    """A helper field the schema does not know would build inputs that validation always rejects."""
    for model in models:
        for name in (f.name for f in dataclasses.fields(helper)):
            with pytest.raises(InputValidationError) as info:
                validate_input(model, {name: object()})
            unknown = [p for p in info.value.problems if "not a known field" in p]
            assert not any(p.startswith(f"input.{name}=") for p in unknown)


HELPERS = (SeedreamInput, ZImageInput, NanoBananaInput, ImagenInput, FluxInput, KlingInput)


def _schema_fields(model: str) -> tuple[set[str], set[str]]:
    """(accepted, required) field names of a model's schema; NotSupported fields are not accepted."""
    from airflow_provider_liangxin.models import _SCHEMAS, NotSupported

    fields = _SCHEMAS[model].input.fields
    accepted = {name for name, spec in fields.items() if not isinstance(spec.rule, NotSupported)}
    return accepted, {name for name, spec in fields.items() if spec.required}


@pytest.mark.parametrize("helper", HELPERS, ids=lambda h: h.__name__)
def test_typed_helpers_and_schemas_name_the_same_fields(helper: Any) -> None:
    """Each helper's fields are exactly the union of its models' schema fields, and it requires exactly what every
    one of its models requires: a field added to a schema (or a helper) alone fails here."""
    assert helper.models, f"{helper.__name__} names no models"
    offered = {f.name for f in dataclasses.fields(helper)}
    required = {f.name for f in dataclasses.fields(helper) if f.default is dataclasses.MISSING}
    accepted = [_schema_fields(model) for model in helper.models]
    assert offered == set().union(*(a for a, _ in accepted))
    assert required == set.intersection(*(r for _, r in accepted))


def test_every_model_but_the_documented_one_has_a_typed_helper() -> None:
    covered = [model for helper in HELPERS for model in helper.models]
    assert len(covered) == len(set(covered))
    assert KNOWN_MODELS - set(covered) == {"gemini-2.5-flash-image-preview"}  # docs/models.md: pass a plain dict


def test_no_development_machine_paths_in_the_module() -> None:
    import airflow_provider_liangxin.models as models_module

    assert "/work/" not in Path(models_module.__file__).read_text()
