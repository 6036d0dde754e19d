"""Wiring: settings, the FastAPI app, dependencies, error mapping and the CLI."""
