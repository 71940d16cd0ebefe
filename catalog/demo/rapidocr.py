"""Fetch real trained depthwise-separable CNNs as ONNX files from PyPI, not from a model hub.

The RapidOCR wheels ship PaddleOCR models (Apache-2.0) inside the package. We download the
wheel with pip (`--no-deps`: no onnxruntime/opencv install) and unzip only `<module>/models/*.onnx`
into `cache_dir/<package>-<version>/`. A second call finds the files and does not touch the network.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kernel_catalog.errors import CatalogError


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


class DownloadError(CatalogError):
    """pip could not fetch a wheel (usually: no network); tests skip on this one only."""


def fetch_rapidocr_models(cache_dir: Path) -> dict[str, Path]:
    """Make sure every file of RAPIDOCR_MODELS is under cache_dir; return {file stem: path}."""
    cache_dir = Path(cache_dir)
    found: dict[str, Path] = {}
    for (package, version), models in _by_wheel().items():
        dest = cache_dir / f"{package}-{version}"
        if not all((dest / m.file).is_file() for m in models):
            _fetch_wheel_models(package, version, models, dest)
        found.update({Path(m.file).stem: dest / m.file for m in models})
    return found


def extract_models(wheel: Path, package: str, dest: Path) -> list[Path]:
    """Unzip the `<module>/models/*.onnx` members of a wheel (not sub-folders) into dest."""
    prefix = package.replace("-", "_") + "/models/"
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            leaf = member[len(prefix):]
            if member.startswith(prefix) and leaf.endswith(".onnx") and "/" not in leaf:
                target = dest / leaf
                with zf.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append(target)
    return written


def _by_wheel() -> dict[tuple[str, str], list[RapidOcrModel]]:
    wheels: dict[tuple[str, str], list[RapidOcrModel]] = {}
    for m in RAPIDOCR_MODELS:
        wheels.setdefault((m.package, m.version), []).append(m)
    return wheels


def _fetch_wheel_models(package: str, version: str, models: list[RapidOcrModel],
                        dest: Path) -> None:
    """Download one wheel, extract and check it in a temp folder, then rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temp folder sits beside dest so the final rename stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        wheel = _pip_download(package, version, Path(tmp) / "wheel", dest)
        staged = Path(tmp) / "models"
        extract_models(wheel, package, staged)
        for m in models:
            _check_sha256(staged / m.file, m, wheel)
        if dest.exists():       # an older, incomplete extraction: replace it whole
            shutil.rmtree(dest)
        os.replace(staged, dest)


def _pip_download(package: str, version: str, where: Path, dest: Path) -> Path:
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--timeout", "30", "--retries", "1",
           "-d", str(where), spec]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DownloadError(f"pip download {spec} failed ({exc});"
                            f" {_what_to_do(package, version, dest)}") from None
    wheels = sorted(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise DownloadError(f"pip download {spec} failed ({lines[-1] if lines else 'no output'});"
                            f" {_what_to_do(package, version, dest)}")
    return wheels[0]


def _check_sha256(path: Path, model: RapidOcrModel, wheel: Path) -> None:
    if not path.is_file():
        raise CatalogError(f"{wheel.name}: has no models/{model.file}; the pinned wheel changed:"
                           " report it, or update RAPIDOCR_MODELS")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise CatalogError(f"{wheel.name}: models/{model.file} has sha256 {digest}, expected"
                           f" {model.sha256}; the download is corrupt: run again")


def _what_to_do(package: str, version: str, dest: Path) -> str:
    module = package.replace("-", "_")
    return (f"check access to PyPI, or get the {package}-{version} wheel elsewhere and"
            f" unzip its {module}/models/*.onnx into {dest}/")
