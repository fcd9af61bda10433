"""Query (Athena's role): SQL over the lake with DuckDB."""
