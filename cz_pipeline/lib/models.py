"""One name per model, whatever the route, provider prefix or snapshot spelling LiteLLM logged.

LiteLLM's ``model`` column spells one model several ways: ``anthropic/claude-sonnet-4-5-20250929``
on ``/v1/chat/completions`` and ``/v1/messages``, ``claude-sonnet-4-5-20250929`` on the
``/anthropic`` pass-through, ``anthropic/claude-sonnet-4-5`` when a deployment uses the alias,
``bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0`` on Bedrock and
``vertex_ai/claude-sonnet-4-5@20250929`` on Vertex AI. CloudZero compares and budgets by name,
so all of them become ``claude-sonnet-4-5``. The rule, in order:

1. A leading ``<provider>/`` that repeats the row's provider (``custom_llm_provider``) goes:
   it says where the call went, which the provider dimension already says.
2. A Bedrock model id keeps only the model: the cross-region inference prefix (``us.``, ``eu.``,
   ``apac.``, ``global.``, ...) goes, and for Anthropic models on Bedrock also the vendor
   namespace ``anthropic.`` and the ``-v1:0`` revision after the snapshot date, so Claude on
   Bedrock has Anthropic's own name. Route segments before it (``converse/``) go with them.
3. A snapshot suffix goes: ``-20250929`` (Anthropic), ``-2024-08-06`` (OpenAI), ``@20250929``
   (Vertex AI), and the alias suffixes ``-latest``, ``@latest`` and ``@default``. A snapshot
   and its alias are the same model to a budget; the exact spelling stays in the lake's
   ``model`` column and in the optional ``model_raw`` grain dimension.

Anything else is kept as it is (case included): an Azure deployment name, a fine-tune
(``ft:gpt-4o-2024-08-06:org::id``), an in-house model. Short numeric suffixes such as
``-0613`` or ``-8192`` are not dates and stay.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_BEDROCK_REGION = r"(?:us|us-gov|eu|apac|ap|jp|au|ca|global)"
_BEDROCK_MODEL = re.compile(
    rf"^(?:.*/)?(?:{_BEDROCK_REGION}\.)?(?P<vendor>[a-z0-9-]+)\.(?P<model>[A-Za-z0-9][^/]*)$"
)
_BEDROCK_VENDORS = frozenset(
    {"amazon", "anthropic", "meta", "mistral", "cohere", "ai21", "deepseek", "writer", "qwen"}
)
_BEDROCK_REVISION = re.compile(r"(-20\d{6})-v\d+(?::\d+)?$")
_SNAPSHOT = re.compile(r"(?:[-@]20\d{6}|-20\d\d-\d\d-\d\d|-latest|@latest|@default)$")


def _without_provider_prefix(model: str, provider: str) -> str:
    prefix = f"{provider}/"
    return model[len(prefix) :] if provider and model.startswith(prefix) else model


def _bedrock_model(model: str) -> str:
    match = _BEDROCK_MODEL.match(model)
    if match is None or match["vendor"] not in _BEDROCK_VENDORS:
        return model
    if match["vendor"] == "anthropic" and match["model"].startswith("claude"):
        return _BEDROCK_REVISION.sub(r"\1", match["model"])
    return f"{match['vendor']}.{match['model']}"


def canonical_model_name(model: str, provider: str | None) -> str:
    """The name CloudZero shows for ``model`` as LiteLLM logged it through ``provider``."""
    name = _without_provider_prefix(model.strip(), provider or "")
    name = _bedrock_model(name)
    return _SNAPSHOT.sub("", name)


def canonical_model_names(
    models: pa.Array | pa.ChunkedArray, providers: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """``canonical_model_name`` for every row, computed once per distinct (model, provider).

    Both columns are dictionary-encoded and each (model, provider) pair that occurs is named
    once, so the cost follows the handful of models an hour holds, not its rows. Nulls read
    as ``""``.
    """
    model_codes, model_names = _dictionary_codes(models)
    provider_codes, provider_names = _dictionary_codes(providers)
    width = len(provider_names)
    pairs = model_codes * width + provider_codes
    present = np.flatnonzero(np.bincount(pairs))
    names = [  # one entry per (model, provider) that occurs, never per row
        canonical_model_name(model_names[pair // width], provider_names[pair % width])
        for pair in present.tolist()
    ]
    slot = np.zeros(len(model_names) * width, dtype=np.int64)
    slot[present] = np.arange(len(present))
    return pc.take(pa.array(names, pa.string()), pa.array(slot[pairs]))


def _dictionary_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Each row's index into the column's distinct values; a null points at a final ``""``."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    encoded = pc.dictionary_encode(array)
    distinct = [*encoded.dictionary.to_pylist(), ""]
    codes = pc.fill_null(encoded.indices, len(distinct) - 1)
    return codes.to_numpy().astype(np.int64), distinct
