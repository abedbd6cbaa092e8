"""How a pair is judged: the judge (LLM or EM/F1), the reward rules shared with RL training
(stdlib-only ``reward``: verl loads it by path), several solvers' agreement, the retriever-only pre-check."""
