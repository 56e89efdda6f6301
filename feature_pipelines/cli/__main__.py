"""`python -m feature_pipelines.cli` runs the `featurestore` command."""

from feature_pipelines.cli.commands import main

main()
