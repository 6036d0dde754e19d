"""The operator's console under /console (issue 18): pages, accounts, counters, overrides."""
