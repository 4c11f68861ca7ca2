"""Helpers every layer of the package shares: argument checks, deprecations, collectives."""
