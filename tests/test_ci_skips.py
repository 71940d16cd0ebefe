"""Under CI=true a skip because a tool or server is missing fails the test; other skips stay skips."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER = '''
import pytest

from tests.conftest import skip_missing_tool


def test_browser():
    skip_missing_tool("Chromium is not installed")


def test_module():
    pytest.importorskip("no_such_module_anywhere")


def test_honest():
    pytest.skip("no saddle on 1x7")
'''


@pytest.mark.parametrize("ci, outcomes", [("true", {"failed": 2, "skipped": 1}), ("", {"skipped": 3})])
def test_missing_tool_skips_fail_under_ci(pytester, monkeypatch, ci, outcomes):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401 (the hook)")
    pytester.makepyfile(INNER)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(**outcomes)
    if ci:
        result.stdout.fnmatch_lines(["*CI=true: a missing tool fails the test*Chromium is not installed*"])
