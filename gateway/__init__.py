"""The model gateway: plans from language models over gRPC."""
