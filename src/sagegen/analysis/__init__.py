"""Analysis of a run: the paper's metrics, quality checks, LLM labels and the offline HTML report."""
