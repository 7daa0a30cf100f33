"""Pulumi components: thin wrappers that turn the pure core into AWS resources."""
