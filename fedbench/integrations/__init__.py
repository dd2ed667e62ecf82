"""Recorders that turn other frameworks' runs into fedbench transcripts (optional extras)."""
