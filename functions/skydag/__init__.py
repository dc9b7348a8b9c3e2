"""skydag: a serverless workflow orchestrator for AWS."""

__version__ = "0.1.0"
