"""Parts of the shapes example: procedural data, a conditional VAE, a pixel embedder, a plot."""
