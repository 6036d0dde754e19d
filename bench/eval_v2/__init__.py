"""Eval set v2 for recommendations (issue 16): a catalog, queries and member sessions that
no ranking parameter was chosen on."""
