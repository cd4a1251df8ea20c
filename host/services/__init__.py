"""Host services: validation, ingest, the store, the live monitor, the demo."""
