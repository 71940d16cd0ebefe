"""Adapters are entry-point plugins: a third-party package is found, listed and used."""
from __future__ import annotations

import json
import textwrap

import numpy as np

from .conftest import run_cli

PLUGIN = '''
"""A third-party adapter: kernels from a CSV file, one kernel per line, kh,kw then values."""
import numpy as np
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction


class CsvKernels:
    name = "csvkernels"
    version = "0.3.1"
    description = "kernels from CSV lines (third-party test plugin)"
    priority = 70

    def can_read(self, source, options):
        return source.endswith(".kcsv")

    def read(self, source, options):
        rows = [list(map(float, line.split(","))) for line in open(source) if line.strip()]
        kh, kw = int(rows[0][0]), int(rows[0][1])
        weights = np.array([r[2:] for r in rows], dtype=np.float32).reshape(-1, kh, kw)
        return Extraction("csv-bank", source, True, [DepthwiseLayer("bank", weights, {"kind": "csv"})])
'''


def _install_plugin(folder):
    """Lay out a real installed distribution (module + dist-info with entry_points.txt)."""
    (folder / "csv_kernels_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = folder / "csv_kernels_plugin-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: csv-kernels-plugin\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[kernel_catalog.adapters]\ncsvkernels = csv_kernels_plugin:CsvKernels\n")


def test_third_party_adapter_is_listed_and_ingests(tmp_path):
    plugins = tmp_path / "site"
    plugins.mkdir()
    _install_plugin(plugins)
    env = {"PYTHONPATH": str(plugins), "KERNEL_CATALOG": str(tmp_path / "catalog")}
    listed = json.loads(run_cli("adapters", "--format", "json", env=env, check=True).stdout)
    by_name = {row["adapter"]: row for row in listed}
    assert by_name["csvkernels"]["version"] == "0.3.1"
    assert by_name["csvkernels"]["package"] == "csv-kernels-plugin"
    assert {"onnx", "statedict", "kernelbank", "timm"} <= set(by_name)   # built-ins, same mechanism
    assert all(row["package"] == "kernel-catalog" for name, row in by_name.items() if name != "csvkernels")

    values = np.arange(18, dtype=np.float32).reshape(2, 9) / 10
    source = tmp_path / "bank.kcsv"
    source.write_text("\n".join("3,3," + ",".join(map(str, row)) for row in values))
    done = run_cli("ingest", str(source), env=env, check=True)
    assert "added csv-bank" in done.stdout and "[csvkernels," in done.stdout
    rows = json.loads(run_cli("sql", "SELECT adapter, channel, weights FROM kernels ORDER BY channel",
                              "--format", "json", env=env, check=True).stdout)
    assert [r["adapter"] for r in rows] == ["csvkernels"] * 2
    np.testing.assert_array_equal(np.array([r["weights"] for r in rows], np.float32), values)


def test_plugins_env_limits_loading(tmp_path):
    env = {"KERNEL_CATALOG_PLUGINS": "onnx"}
    listed = json.loads(run_cli("adapters", "--format", "json", env=env, check=True).stdout)
    assert [row["adapter"] for row in listed] == ["onnx"]
