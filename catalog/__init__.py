"""The catalog: items, their vectors and the change log in the store, read by cards and nlp
and written by catalog_sync and the catalog API."""
