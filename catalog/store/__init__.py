"""The catalog on disk: one DuckDB file for metadata and views, Parquet for bulk data.

Public: `Catalog` (open, read, write sessions), the views' SQL (`views`), the result schemas
(`results`), kernel rows (`kernel_table`), queries (`query`), row output (`output`) and atomic
files (`atomic`). Locking and migrations are private.
"""
from kernel_catalog.store._catalog import (
    DB_NAME, DEFAULT_ROOT, ROOT_ENV, Catalog, WriteSession, default_root,
)
from kernel_catalog.store._migrate import current_version, head_version

__all__ = ["DB_NAME", "DEFAULT_ROOT", "ROOT_ENV", "Catalog", "WriteSession", "current_version", "default_root", "head_version"]
