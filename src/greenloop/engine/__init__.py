"""The orchestrator: workspace packing, cache keys, selection, and running a pipeline's steps."""
