-- How clearly a cluster's name wins: its best template family's cosine minus the best cosine of
-- any other family. A small margin flags a cluster between two families (name with care).
-- Clusters named before this version read NULL.
ALTER TABLE cluster_records ADD COLUMN margin DOUBLE;
