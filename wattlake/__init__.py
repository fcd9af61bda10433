"""wattlake: self-hosted, real-time energy monitoring into a Parquet data lake."""

__version__ = "0.1.0"
