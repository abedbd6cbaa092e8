"""verl in one place: its parquet export, the cluster recipe, the corpus it serves, the tool and
the conformance check (run inside verl's own environment)."""
