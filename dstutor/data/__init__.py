"""Data engineering: corpora from pinned archives, cleaning, dedup, augmentation, mixing, tokenizer, packing."""
