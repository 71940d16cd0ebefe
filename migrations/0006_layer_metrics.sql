-- CNN Filter DB's per-layer metrics (Gavrikov and Keuper, CVPR 2022), computed at ingest on the
-- raw weights of each layer (per expert for CondConv): the share of degenerate kernels and the
-- normalised entropy of the centred layer's singular value spectrum (exact definitions in
-- kernel_catalog.store.kernel_table.layer_metrics). Layers ingested before this version are
-- backfilled from their Parquet files by a Python step run in this migration's transaction
-- (kernel_catalog.store._layer_backfill).
ALTER TABLE layer_records ADD COLUMN sparsity DOUBLE;
ALTER TABLE layer_records ADD COLUMN variance_entropy DOUBLE;
