"""The embeddings client (proxy/embeddings/client.py) against the fake upstream app, against
an address where nothing listens (a real, refused connection), and its response parsing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from proxy.embeddings import EmbeddingClient, EmbeddingError
from proxy.embeddings.client import parse_embeddings
from tests.fakes import FakeUpstream
from tests.fakes.embeddings import concept_embed

DIM = 32


def client_for(fake: FakeUpstream, **kw: Any) -> EmbeddingClient:
    transport = httpx.ASGITransport(app=fake.app)
    return EmbeddingClient("http://fake/v1", kw.pop("key", "sk-e"), "m", transport=transport,
                           **kw)


def test_the_client_returns_normalized_rows_in_input_order() -> None:
    fake = FakeUpstream()
    fake.embedder = concept_embed

    async def run() -> np.ndarray:
        client = client_for(fake, dimensions=DIM)
        try:
            return await client.embed(["dog", "feline", "dog"])
        finally:
            await client.aclose()

    matrix = asyncio.run(run())
    assert matrix.shape == (3, DIM) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    assert np.array_equal(matrix[0], matrix[2]) and not np.array_equal(matrix[0], matrix[1])
    body = fake.all_requests[-1].json
    assert body == {"model": "m", "input": ["dog", "feline", "dog"], "encoding_format": "float",
                    "dimensions": DIM}
    assert fake.all_requests[-1].headers["authorization"] == "Bearer sk-e"


@pytest.mark.parametrize("setup_fake, code, status", [
    (lambda f: setattr(f, "embeddings_status", 503), "server_error", 503),
    (lambda f: setattr(f, "require_api_key", "other"), "invalid_api_key", 401),
])
def test_client_errors_are_typed_and_leak_nothing(setup_fake: Any, code: str,
                                                  status: int) -> None:
    fake = FakeUpstream()
    setup_fake(fake)

    async def run() -> EmbeddingError:
        client = client_for(fake, key="sk-secret-key")
        try:
            with pytest.raises(EmbeddingError) as info:
                await client.embed(["my secret diary entry"])
            return info.value
        finally:
            await client.aclose()

    error = asyncio.run(run())
    assert (error.status, error.code) == (status, code)
    assert "secret" not in str(error) and "diary" not in str(error)
    assert not error.bad_input


def test_an_unreachable_endpoint_is_an_error_not_a_crash() -> None:
    async def run() -> EmbeddingError:
        client = EmbeddingClient("http://127.0.0.1:9/v1", None, "m", timeout_s=2)
        try:
            with pytest.raises(EmbeddingError) as info:
                await client.embed(["x"])
            return info.value
        finally:
            await client.aclose()

    assert asyncio.run(run()).code == "unreachable"


@pytest.mark.parametrize("payload", [
    None, {}, {"data": []}, {"data": [{"index": 0, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
    {"data": [{"index": 0, "embedding": "not base64!"}, {"index": 1, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [float("nan")]}, {"index": 1, "embedding": [1.0]}]},
])
def test_malformed_responses_are_rejected(payload: Any) -> None:
    with pytest.raises(EmbeddingError) as info:
        parse_embeddings(payload, 2)
    assert info.value.code == "bad_response"


def test_responses_out_of_order_and_base64_are_accepted() -> None:
    import base64
    encoded = base64.b64encode(np.array([0.0, 2.0], dtype="<f4").tobytes()).decode()
    matrix = parse_embeddings({"data": [{"index": 1, "embedding": encoded},
                                        {"index": 0, "embedding": [3.0, 4.0]}]}, 2)
    assert np.allclose(matrix, [[0.6, 0.8], [0.0, 1.0]])
