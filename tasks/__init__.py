"""seqio task and mixture registrations for ELMER (registered on import)."""
