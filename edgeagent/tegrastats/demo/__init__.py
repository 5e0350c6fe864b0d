"""Data for `run --demo`: a real tegrastats log (see README.md here for its source)."""
