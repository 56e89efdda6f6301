"""CLI layer: the `featurestore` command, the catalog views it prints, and the sample data.

May import: every layer.
"""

from feature_pipelines.cli.commands import main

__all__ = ["main"]
