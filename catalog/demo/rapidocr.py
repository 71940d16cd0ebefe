"""Fetch real trained depthwise-separable CNNs as ONNX files from PyPI, not from a model hub.

The RapidOCR wheels ship PaddleOCR models (Apache-2.0) inside the package. catalog.demo.wheels
downloads the wheel with pip (`--no-deps`: no onnxruntime/opencv install) and unzips only the
listed `<module>/models/*.onnx` into `cache_dir/<package>-<version>/`, checked against their sha256.
A second call finds the files and does not touch the network.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from kernel_catalog.demo.wheels import DownloadError, WheelModel, extract_members, fetch_wheel_models

__all__ = ["RAPIDOCR_MODELS", "DownloadError", "RapidOcrModel", "extract_models", "fetch_rapidocr_models"]


@dataclass(frozen=True)
class RapidOcrModel:
    """One ONNX file as shipped in a RapidOCR wheel."""

    package: str
    version: str
    file: str
    sha256: str
    licence: str = "Apache-2.0"     # weights: Baidu / PaddleOCR; packaging: RapidOCR


RAPIDOCR_MODELS: tuple[RapidOcrModel, ...] = (
    RapidOcrModel("rapidocr-onnxruntime", "1.4.4", "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    RapidOcrModel("rapidocr-onnxruntime", "1.4.4", "ch_PP-OCRv4_det_infer.onnx",
                  "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    RapidOcrModel("rapidocr-onnxruntime", "1.4.4", "ch_PP-OCRv4_rec_infer.onnx",
                  "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    RapidOcrModel("rapidocr", "3.10.0", "PP-OCRv6_det_small.onnx",
                  "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    RapidOcrModel("rapidocr", "3.10.0", "PP-OCRv6_rec_small.onnx",
                  "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    # Same bytes as ch_ppocr_mobile_v2.0_cls_infer.onnx above, under another name.
    RapidOcrModel("rapidocr", "3.10.0", "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
                  "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
)


def fetch_rapidocr_models(cache_dir: Path) -> dict[str, Path]:
    """Make sure every file of RAPIDOCR_MODELS is under cache_dir; return {file stem: path}."""
    return fetch_wheel_models([_wheel_model(m) for m in RAPIDOCR_MODELS], cache_dir, _what_to_do)


def extract_models(wheel: Path, package: str, dest: Path) -> list[Path]:
    """Unzip the `<module>/models/*.onnx` members of a wheel (not sub-folders) into dest."""
    prefix = package.replace("-", "_") + "/models/"
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(prefix) and m.endswith(".onnx")
                   and "/" not in m[len(prefix):]]
    return extract_members(wheel, members, dest)


def _wheel_model(m: RapidOcrModel) -> WheelModel:
    return WheelModel(m.package, m.version, f"{m.package.replace('-', '_')}/models/{m.file}", m.sha256, m.licence)


def _what_to_do(package: str, version: str, dest: Path) -> str:
    module = package.replace("-", "_")
    return (f"check access to PyPI, or get the {package}-{version} wheel elsewhere and"
            f" unzip its {module}/models/*.onnx into {dest}/")
