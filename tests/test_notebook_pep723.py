"""The PEP 723 header: parsed with tomllib, checked against the installed packages."""

from __future__ import annotations

import platform

import pytest

from dagster_lakehouse.notebook import NotebookLoadError
from dagster_lakehouse.notebook.pep723 import ScriptMetadata, check_environment, read_script_metadata

HEADER = """\
#!/usr/bin/env python
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "polars>=1.0",   # the data frames
#     "marimo",
# ]
# ///
import marimo
"""


def test_reads_dependencies_requires_python_and_the_line():
    script = read_script_metadata(HEADER, "nb.py")
    assert script == ScriptMetadata(("polars>=1.0", "marimo"), ">=3.11", 2)


def test_no_header_means_no_dependencies():
    assert read_script_metadata("import marimo\n", "nb.py") == ScriptMetadata()
    assert read_script_metadata("# /// pyproject\n# x = 1\n# ///\n", "nb.py") == ScriptMetadata()


def test_invalid_toml_names_the_line():
    with pytest.raises(NotebookLoadError, match=r"^nb.py:3: .*not valid TOML"):
        read_script_metadata("import os\n\n# /// script\n# dependencies = [\n# ///\n", "nb.py")


def test_dependencies_must_be_a_list_of_strings():
    with pytest.raises(NotebookLoadError, match="list of strings"):
        read_script_metadata('# /// script\n# dependencies = "polars"\n# ///\n', "nb.py")


def test_two_script_blocks_are_an_error():
    block = '# /// script\n# dependencies = []\n# ///\n'
    with pytest.raises(NotebookLoadError, match="more than one"):
        read_script_metadata(block + "\n" + block, "nb.py")


def test_installed_packages_pass():
    check_environment(ScriptMetadata(("polars>=1.0", "marimo", "dagster>=1.13,<1.14", "pyiceberg[pyarrow]")), "nb.py")


def test_markers_that_do_not_apply_are_skipped():
    check_environment(ScriptMetadata(('surely-not-installed-pkg; python_version < "3.0"',)), "nb.py")


def test_every_problem_is_reported_at_once():
    script = ScriptMetadata(("surely-not-installed-pkg", "polars<1", "not a requirement!!"), line=4)
    with pytest.raises(NotebookLoadError) as info:
        check_environment(script, "nb.py")
    message = str(info.value)
    assert message.startswith("nb.py:4: ")
    assert "'surely-not-installed-pkg' (surely-not-installed-pkg) is not installed" in message
    assert "package 'polars'" in message and "needs polars<1" in message
    assert "'not a requirement!!' is not a valid requirement" in message


def test_requires_python_is_checked():
    with pytest.raises(NotebookLoadError, match=f"this is Python {platform.python_version()}"):
        check_environment(ScriptMetadata(requires_python="<3"), "nb.py")
