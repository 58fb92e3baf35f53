"""The Dagster code location: thin assets over `lab_pipelines`."""
