"""Real trained LiteRT (.tflite) models from the `mediapipe` wheel on PyPI, not from a model hub.

mediapipe 0.10.14 ships 14 trained models under `mediapipe/modules/` (Apache-2.0, Google): face,
hand, palm, pose and iris networks, MobileNet-style DS-CNNs whose depthwise filters are float16
behind DEQUANTIZE ops (iris_landmark and hand_recrop: float32). The wheel is fetched with
`pip download --no-deps` (catalog.demo.wheels) into `cache_dir/mediapipe-0.10.14/`.
"""
from __future__ import annotations

from pathlib import Path

from kernel_catalog.demo.wheels import WheelModel, fetch_wheel_models

PACKAGE, VERSION, LICENCE = "mediapipe", "0.10.14", "Apache-2.0"

_FILES = {   # member under mediapipe/modules/ -> sha256
    "face_detection/face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "face_detection/face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_landmark/face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    "face_landmark/face_landmark_with_attention.tflite": "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
    "hand_landmark/hand_landmark_full.tflite": "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    "hand_landmark/hand_landmark_lite.tflite": "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
    "holistic_landmark/hand_recrop.tflite": "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d",
    "iris_landmark/iris_landmark.tflite": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
    "palm_detection/palm_detection_full.tflite": "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    "palm_detection/palm_detection_lite.tflite": "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    "pose_detection/pose_detection.tflite": "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    "pose_landmark/pose_landmark_full.tflite": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    "selfie_segmentation/selfie_segmentation.tflite": "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    "selfie_segmentation/selfie_segmentation_landscape.tflite": "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
}

MEDIAPIPE_MODELS: tuple[WheelModel, ...] = tuple(
    WheelModel(PACKAGE, VERSION, f"mediapipe/modules/{member}", sha256, LICENCE) for member, sha256 in _FILES.items())


def fetch_mediapipe_models(cache_dir: Path, names: list[str] | None = None) -> dict[str, Path]:
    """The mediapipe .tflite files (all, or those whose stem is in `names`): {stem: path}."""
    models = [m for m in MEDIAPIPE_MODELS if names is None or Path(m.file).stem in names]
    unknown = set(names or ()) - {Path(m.file).stem for m in models}
    if unknown:
        raise ValueError(f"not a mediapipe {VERSION} model: {', '.join(sorted(unknown))}")
    return fetch_wheel_models(models, cache_dir, _what_to_do)


def _what_to_do(package: str, version: str, dest: Path) -> str:
    return (f"check access to PyPI, or get the {package}-{version} wheel (cp311, manylinux) elsewhere and"
            f" unzip its mediapipe/modules/*/*.tflite into {dest}/")
