"""The dashboard, API and monitoring endpoints (the QuickSight / CloudWatch stage)."""
