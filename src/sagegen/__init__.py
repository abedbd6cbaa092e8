"""sagegen: verified, difficulty-controlled deep-search QA generation (SAGE) on any backend and corpus."""

__version__ = "0.1.0"
