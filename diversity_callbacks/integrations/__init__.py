"""Adapters for training loops other than Lightning's: :mod:`~diversity_callbacks.integrations.hf`
for the Hugging Face ``Trainer`` (and TRL's trainers). Each is imported only when used."""
