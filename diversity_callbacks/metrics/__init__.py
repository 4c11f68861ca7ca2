"""torchmetrics metrics that accumulate embeddings across batches and DDP ranks."""
