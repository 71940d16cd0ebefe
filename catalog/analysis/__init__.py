"""The paper's analysis as runs: preprocessing, autoencoder, null model, clustering, naming."""
