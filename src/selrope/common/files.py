"""File names that several packages read and write."""

# The corpus tokenizer (Hugging Face tokenizers' JSON), copied beside a trained model's weights.
TOKENIZER_FILE = "tokenizer.json"
