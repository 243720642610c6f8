"""Isolated notebooks: a notebook's models run in the environment its PEP 723 header (or its folder's
`pyproject.toml`) declares, built with uv and cached, and reached from the Dagster step through Dagster Pipes.

`requirements` says what an environment is made of, `environments` builds and caches it, `plan` is what a step
sends to the model's process, `runner` is that process, `step` is the Dagster side. Only `step` imports Dagster.
"""
