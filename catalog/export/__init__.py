"""Exports of catalog subsets (Parquet, CSV, NPZ) with provenance manifests."""
