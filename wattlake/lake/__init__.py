"""Lake storage (a local folder or an S3 bucket), its layout and catalog."""
