"""Jobs over the lake (Glue ETL's role): compaction, rollups, exports, lifecycle."""
