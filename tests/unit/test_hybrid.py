"""Hybrid search's pure parts: candidate depth, the fake embedding model's paraphrase
property, and the embedding service when it is disabled (fusion: tests/unit/test_ranking.py).
The embeddings client is tested in tests/upstream/test_embedding_client.py, `HybridSearch` over real stores
in tests/store/test_hybrid_over_stores.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import load_settings
from proxy.embeddings import EmbeddingService
from proxy.embeddings.hybrid import MAX_CANDIDATES, MIN_CANDIDATES, candidates
from tests.fakes.embeddings import CONCEPTS, concept_embed, cosine

DIM = 32


def test_candidate_depth_is_bounded() -> None:
    assert candidates(1) == MIN_CANDIDATES
    assert candidates(20) == 80
    assert candidates(100) == MAX_CANDIDATES
    assert candidates(10_000) == 10_000  # never fewer than asked for


# --- the fake embedding model ----------------------------------------------------------------
def test_paraphrases_are_near_and_unrelated_texts_far() -> None:
    query = concept_embed("what did my doctor say about peanuts", DIM)
    paraphrase = concept_embed("the physician told me to avoid groundnuts", DIM)
    unrelated = concept_embed("the kitten sleeps on the sofa", DIM)
    assert cosine(query, paraphrase) > 0.5
    assert cosine(query, unrelated) < 0.2
    assert cosine(query, query) == pytest.approx(1.0)


@given(st.sampled_from(CONCEPTS), st.data())
def test_synonyms_embed_identically(group: frozenset[str], data: Any) -> None:
    a, b = data.draw(st.lists(st.sampled_from(sorted(group)), min_size=2, max_size=2))
    assert concept_embed(f"about the {a}", DIM) == concept_embed(f"about the {b}", DIM)


# --- the embedding service -------------------------------------------------------------------
def test_the_service_is_a_no_op_when_disabled() -> None:
    settings = load_settings(environ={})
    store = object()
    service = EmbeddingService(settings, store)
    asyncio.run(service.start())
    assert service.search.backend is store and not service.search.hybrid
    assert not service.active
    service.notify(1)  # nothing to wake, nothing fails


def test_document_marks_are_part_of_the_vectors_model_key() -> None:
    from proxy.embeddings import model_key

    # unmarked: the key vectors were stored under before the marks existed
    assert model_key("m", None) == "m" and model_key("m", 256) == "m@256"
    marked = {model_key("m", 256, "passage: "), model_key("m", 256, "search_document: "),
              model_key("m", 256, "", "document"), model_key("m", 256, "passage: ", "document")}
    assert len(marked) == 4 and all(k.startswith("m@256#doc-") for k in marked)
    assert model_key("m", 256, "passage: ") == model_key("m", 256, "passage: ")


def test_turns_embedded_with_their_context_have_their_own_model_key() -> None:
    """`document_context_turns` changes what is embedded, so it changes the key (the catch-up
    re-embeds); 0 keeps every key as it was, marked or not."""
    from proxy.embeddings import model_key

    assert model_key("m", 256, context_turns=0) == "m@256"
    assert model_key("m", 256, "passage: ", None, 0) == model_key("m", 256, "passage: ")
    keys = {model_key("m", 256), model_key("m", 256, context_turns=1),
            model_key("m", 256, context_turns=2), model_key("m", 256, "passage: ", None, 1),
            model_key("m", 256, "passage: ")}
    assert len(keys) == 5
    assert model_key("m", None, context_turns=1).startswith("m#doc-")


def test_document_text_puts_the_earlier_turns_first() -> None:
    from proxy.store.vector_base import MAX_EMBED_CHARS, document_text

    assert document_text("with whom?") == "with whom?"
    assert document_text("with whom?", ["", "  "]) == "with whom?"  # no context: the plain text
    assert document_text("with whom?", ["Where did you go?", "To the lake."]) == (
        "Where did you go?\nTo the lake.\nwith whom?")
    assert document_text("y" * 9000) == "y" * MAX_EMBED_CHARS
    assert len(document_text("y" * 9000, ["context"])) == MAX_EMBED_CHARS
