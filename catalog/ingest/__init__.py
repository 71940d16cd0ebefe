"""Ingest: sources -> adapters -> rows and Parquet committed into the store, atomically."""
from kernel_catalog.ingest._ingest import (
    IngestFailure, IngestResult, commit_extraction, expand_sources, read_source,
)
from kernel_catalog.ingest._pipeline import DEFAULT_JOBS, ingest, ingest_many, summary
from kernel_catalog.ingest._ray import ingest_ray

__all__ = ["DEFAULT_JOBS", "IngestFailure", "IngestResult", "commit_extraction", "expand_sources", "ingest",
           "ingest_many", "ingest_ray", "read_source", "summary"]
