"""Filling the catalog from outside: the mall API client (source.py), ``mingpian sync``
(sync.py) and JSON/JSONL imports with the demo catalog (loader.py); the catalog itself
lives in catalog/."""
