"""Exports of a run for training and eval: verl/Search-R1 parquet + reward, SFT, HF datasets, FlashRAG."""
