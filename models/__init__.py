"""Pydantic types and errors shared by two or more packages; no I/O."""
