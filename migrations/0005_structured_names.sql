-- Structured names (issue 9): a cluster's best match as family (shape without sign or direction),
-- polarity ('pos' / 'neg', NULL for deriv1, saddle and user templates), orientation (degrees
-- counter-clockwise from +x with y up, NULL for isotropic shapes) and scale (sigma in px for
-- Gaussian families, half-size / arm length for square / cross, NULL otherwise).
-- Clusters named before this version read NULL. The per-kernel columns (labels.kernel_family,
-- kernel_polarity, kernel_orientation, kernel_scale) live in the labels Parquet files; the labels
-- view reads NULL for files written before them.
ALTER TABLE cluster_records ADD COLUMN family VARCHAR;
ALTER TABLE cluster_records ADD COLUMN polarity VARCHAR;
ALTER TABLE cluster_records ADD COLUMN orientation DOUBLE;
ALTER TABLE cluster_records ADD COLUMN scale DOUBLE;
