"""CLI verbs beyond serve/worker, one module per domain; each exposes register(sub)."""
