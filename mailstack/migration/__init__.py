"""The migration's lifecycle: evidence, the cutover and decommission gates, where the migration stands."""
