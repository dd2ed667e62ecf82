"""Suite expansion, cell execution, result records, tables."""
