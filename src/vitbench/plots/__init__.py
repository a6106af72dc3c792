"""Every PNG the pipeline writes, one module per stage family; `common` holds the shared style."""
