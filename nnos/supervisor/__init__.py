"""`nnos up`: one declarative process table, reconciled by one loop (after openpilot's manager)."""
