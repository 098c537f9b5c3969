"""Code shared by the ingest (web) and the workers: settings, storage and domain rules."""
