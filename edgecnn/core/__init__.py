"""What every stage shares: errors, atomic file writes, progress and tables, ONNX helpers."""
