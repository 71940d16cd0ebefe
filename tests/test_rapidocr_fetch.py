"""Fetching the RapidOCR ONNX models from PyPI wheels: extraction, idempotence, failure, real."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from kernel_catalog.errors import CatalogError
from kernel_catalog.demo.rapidocr import RAPIDOCR_MODELS, DownloadError, extract_models, fetch_rapidocr_models

from .conftest import skip_missing_tool


def test_expected_files_are_listed_with_licence():
    stems = {Path(m.file).stem for m in RAPIDOCR_MODELS}
    assert {"ch_ppocr_mobile_v2.0_cls_infer", "ch_PP-OCRv4_det_infer", "ch_PP-OCRv4_rec_infer",
            "PP-OCRv6_det_small", "PP-OCRv6_rec_small"} <= stems
    assert len(stems) == len(RAPIDOCR_MODELS)       # stems are the keys of the result: unique
    assert {m.licence for m in RAPIDOCR_MODELS} == {"Apache-2.0"}
    assert {(m.package, m.version) for m in RAPIDOCR_MODELS} == {
        ("rapidocr-onnxruntime", "1.4.4"), ("rapidocr", "3.10.0")}


def test_extract_models_takes_only_top_level_onnx_of_models_folder(tmp_path):
    wheel = tmp_path / "rapidocr_onnxruntime-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("rapidocr_onnxruntime/models/a.onnx", b"model a")
        zf.writestr("rapidocr_onnxruntime/models/keys.txt", b"not a model")
        zf.writestr("rapidocr_onnxruntime/models/sub/b.onnx", b"nested, not taken")
        zf.writestr("rapidocr_onnxruntime/main.py", b"print()")
        zf.writestr("other/models/c.onnx", b"another package")
    written = extract_models(wheel, "rapidocr-onnxruntime", tmp_path / "out")
    assert written == [tmp_path / "out" / "a.onnx"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.onnx"]
    assert (tmp_path / "out" / "a.onnx").read_bytes() == b"model a"


def test_already_extracted_is_not_fetched_again(tmp_path):
    """Files in place are returned as they are: no pip run (works offline), no rewrite."""
    for m in RAPIDOCR_MODELS:
        folder = tmp_path / f"{m.package}-{m.version}"
        folder.mkdir(exist_ok=True)
        (folder / m.file).write_bytes(b"placeholder " + m.file.encode())
    found = fetch_rapidocr_models(tmp_path)
    assert set(found) == {Path(m.file).stem for m in RAPIDOCR_MODELS}
    for stem, path in found.items():
        assert path.read_bytes() == b"placeholder " + path.name.encode()


def test_no_index_is_one_line_download_error(tmp_path, monkeypatch):
    # A refused local port stands for "no network"; pip's own settings could point elsewhere.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")     # pip: read no config file
    with pytest.raises(DownloadError) as err:
        fetch_rapidocr_models(tmp_path / "cache")
    message = str(err.value)
    assert isinstance(err.value, CatalogError)
    assert "\n" not in message and "pip download rapidocr" in message and "PyPI" in message
    assert not any((tmp_path / "cache").glob("rapidocr*")), "nothing half-written is left"


def test_real_download(tmp_path):
    """Needs PyPI: skipped (with pip's reason) only when the download itself fails."""
    try:
        found = fetch_rapidocr_models(tmp_path)
    except DownloadError as exc:
        skip_missing_tool(f"pip download failed, no PyPI here? {exc}")
    assert set(found) == {Path(m.file).stem for m in RAPIDOCR_MODELS}
    for m in RAPIDOCR_MODELS:
        path = found[Path(m.file).stem]
        assert path == tmp_path / f"{m.package}-{m.version}" / m.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == m.sha256
    folders = sorted(p.name for p in tmp_path.iterdir())    # no temp folder left behind
    assert folders == ["rapidocr-3.10.0", "rapidocr-onnxruntime-1.4.4"]
    stamps = {p: p.stat().st_mtime_ns for p in found.values()}
    assert fetch_rapidocr_models(tmp_path) == found
    assert {p: p.stat().st_mtime_ns for p in found.values()} == stamps
