-- (schema 5) What placed the features on the map (pca, tsne, umap), recorded at mine time (autointerp issue 14).
ALTER TABLE saes ADD COLUMN map_method VARCHAR(16);
