"""Dagster definitions of the sample project: everything under defs/, as `dg` scaffolds it."""

from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    """Load the components in the defs folder."""
    return load_from_defs_folder(path_within_project=Path(__file__).parent)
