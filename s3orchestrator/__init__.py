"""s3orchestrator: one S3-compatible endpoint over many upstream object stores."""

__version__ = "0.1.0"
