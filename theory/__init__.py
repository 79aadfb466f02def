"""placeholder: filled in by the package owner."""
