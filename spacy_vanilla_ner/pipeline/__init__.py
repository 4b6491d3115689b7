"""The `vanilla_ner` pipeline component."""
