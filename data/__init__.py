"""The synthetic instruction world (see data/README.md) and strict loaders for its files.

    from data import load_prompts, load_demonstrations, load_comparisons, read_corpus, DataError
"""
from data.loaders import (DataError, flatten_comparisons, has_meta, load_comparisons, load_demonstrations,
                          load_probes, load_prompts, ranked_pairs, read_corpus, write_jsonl)

__all__ = ["DataError", "load_prompts", "load_demonstrations", "load_comparisons", "read_corpus",
           "write_jsonl", "has_meta", "ranked_pairs", "load_probes", "flatten_comparisons"]
