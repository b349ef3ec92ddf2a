"""Data layer: readers, row validation with quarantine, dataset versions, splits."""
