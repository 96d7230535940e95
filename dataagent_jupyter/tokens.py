"""Counting tokens without a tokenizer: the one estimate every prompt budget uses.

Frame descriptions are cut to a budget, history is trimmed to what is left, and a turn
records the size of its prompt; all three must agree on what a token is, so they share
this estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["estimate_message_tokens", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token for English and code).

    tiktoken downloads its tables on first use, which offline machines cannot do; for
    budgeting a prompt a close estimate is enough.
    """
    return (len(text) + 3) // 4


def estimate_message_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """The estimate for a whole chat prompt (the sum over its messages' contents)."""
    return sum(estimate_tokens(m["content"]) for m in messages)
