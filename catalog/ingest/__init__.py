"""Ingest: sources -> adapters -> rows and Parquet committed into the store, atomically."""
from kernel_catalog.ingest._ingest import (
    IngestFailure, IngestResult, commit_extraction, expand_sources, ingest, ingest_many, read_source,
)

__all__ = ["IngestFailure", "IngestResult", "commit_extraction", "expand_sources", "ingest",
           "ingest_many", "read_source"]
