"""A minimal dg project whose assets come from a marimo notebook through `NotebookComponent`."""
