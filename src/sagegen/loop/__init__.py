"""The SAGE loop and the runs around it: one pair's rounds (``pipeline``), a run's session,
its parts, the pre-check, several solvers' agreement, seeds, and the other loops (eval, estimate)."""
