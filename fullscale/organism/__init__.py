"""The model organism (placeholder: filled in by its owner)."""
