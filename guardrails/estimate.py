"""Token estimates from text: what a call will cost before (or without) the provider's count.

A budget has to reserve something for a call the run has no history for (its
first call, or several calls in flight at once), and has to charge something for
a call whose provider reported no usage. Both come from the text itself:

* With ``tiktoken`` installed and its encoding file on disk, the count is the
  tokenizer's: the model's own encoding when tiktoken knows the model (OpenAI
  models), else ``cl100k_base``, which counts other vendors' tokenizers within
  about 20%. spanguard never downloads a tokenizer file (a guard must not wait on
  the network): it reads tiktoken's cache (``TIKTOKEN_CACHE_DIR``,
  ``DATA_GYM_CACHE_DIR`` or the temp directory) and the copy LlamaIndex ships;
  with neither, it falls back to the estimate below. tiktoken is optional.
* Otherwise a character estimate (:func:`character_estimate`): one token per 4
  ASCII letters, per 2 digits, per punctuation or symbol character, and per 2
  bytes of non-ASCII text (CJK, Cyrillic, emoji); whitespace is free. Against
  the larger of the ``cl100k_base`` and ``o200k_base`` counts it gives 0.9 to 1.7
  times the tokens on prose, code, JSON, tool schemas, Markdown, URLs, CJK,
  Cyrillic and Arabic text (tests/guardrails/test_estimate.py); it under-counts
  random hex or base64 (0.4 to 0.7 times), which a budget then learns from the
  first reported usage of the run (:func:`spanguard.guardrails.budget.calibrate`).

Every message adds :data:`MESSAGE_OVERHEAD` tokens (role and separators, as
chat APIs count them) and a request adds :data:`REQUEST_OVERHEAD`, so an
estimate is never 0. The load of an encoding (0.1-0.3 s, once per process) and
each count (about 0.1 ms per 1,000 tokens) happen only when a guard asks.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from hashlib import sha1
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spanguard.guardrails.steps import ModelCall

LETTERS_PER_TOKEN = 4
DIGITS_PER_TOKEN = 2
NON_ASCII_BYTES_PER_TOKEN = 2
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
DEFAULT_ENCODING = "cl100k_base"

# The encodings spanguard reads, by the URL tiktoken caches them under (its cache
# file is named by the URL's sha1).
_SOURCES = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_CACHE_ENV = "TIKTOKEN_CACHE_DIR"

Counter = Callable[[str], int]
_CACHE_SIZE = 1024  # texts whose counts one run remembers

_lock = threading.Lock()
_counters: dict[str, Counter | None] = {}
_by_model: dict[str | None, Counter] = {}


_LETTERS = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1))
_DIGITS = bytes(range(ord("0"), ord("9") + 1))
_SYMBOLS = bytes(c for c in range(0x21, 0x7F) if c not in _LETTERS and c not in _DIGITS)
_NON_ASCII = bytes(range(0x80, 0x100))


def character_estimate(text: str) -> int:
    """The tokenizer-free count, by character class (see the module's docstring)."""
    data = text.encode("utf-8", "replace")
    size = len(data)
    letters = size - len(data.translate(None, _LETTERS))
    digits = size - len(data.translate(None, _DIGITS))
    symbols = size - len(data.translate(None, _SYMBOLS))
    non_ascii = size - len(data.translate(None, _NON_ASCII))
    return (math.ceil(letters / LETTERS_PER_TOKEN) + math.ceil(digits / DIGITS_PER_TOKEN)
            + symbols + math.ceil(non_ascii / NON_ASCII_BYTES_PER_TOKEN))


def counter_for(model: str | None) -> Counter:
    """The token counter for ``model``'s text (tokenizer, else the character estimate)."""
    found = _by_model.get(model)
    if found is None:
        found = _tokenizer(_encoding_name(model)) or _tokenizer(DEFAULT_ENCODING) \
            or character_estimate
        if len(_by_model) < 1024:  # model names are few; never grow without bound
            _by_model[model] = found
    return found


def estimate_tokens(parts: Iterable[str], model: str | None = None,
                    cache: dict[str, int] | None = None) -> int:
    """Tokens of a request made of ``parts`` (one per message), overheads included.

    ``cache`` keeps counts by text: calls of one run re-send the same history, and a
    string's hash is computed once, so a repeated message costs a lookup.
    """
    count = counter_for(model)
    total = REQUEST_OVERHEAD
    for part in parts:
        if not part:
            total += MESSAGE_OVERHEAD
            continue
        tokens = cache.get(part) if cache is not None else None
        if tokens is None:
            tokens = count(part)
            if cache is not None:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[part] = tokens
        total += MESSAGE_OVERHEAD + tokens
    return total


def text_tokens(parts: Iterable[str], model: str | None = None) -> int:
    """Tokens of a reply's text, without request overheads (0 for no text)."""
    count = counter_for(model)
    return sum(count(part) for part in parts if part)


def input_estimate(call: ModelCall, cache: dict[str, int] | None = None) -> int | None:
    """The call's input tokens estimated from its prompt, once (kept on the call);
    the caller's own count when it gave one; None when there is nothing to count."""
    if call.estimated_input_tokens is not None:
        return call.estimated_input_tokens
    if call.prompt is None:
        return None
    call.estimated_input_tokens = estimate_tokens(call.prompt(), call.model, cache)
    return call.estimated_input_tokens


def tokenizer_in_use(model: str | None = None) -> str | None:
    """The encoding that counts ``model``'s text, or None for the character estimate."""
    for name in (_encoding_name(model), DEFAULT_ENCODING):
        if _tokenizer(name) is not None:
            return name
    return None


def reset() -> None:
    """Forget loaded tokenizers (tests switch tiktoken off and on)."""
    with _lock:
        _counters.clear()
        _by_model.clear()


def _encoding_name(model: str | None) -> str:
    if not model:
        return DEFAULT_ENCODING
    try:
        import tiktoken
    except ImportError:
        return DEFAULT_ENCODING
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING
    return name if name in _SOURCES else DEFAULT_ENCODING


def _tokenizer(name: str) -> Counter | None:
    if name in _counters:
        return _counters[name]
    with _lock:
        if name not in _counters:
            _counters[name] = _load(name)
        return _counters[name]


def _load(name: str) -> Counter | None:
    """tiktoken's encoding ``name`` if its file is on disk; never a download."""
    try:
        import tiktoken
    except ImportError:
        return None
    cache_file = sha1(_SOURCES[name].encode()).hexdigest()
    own = _tiktoken_cache_dir()
    try:
        if own and (own / cache_file).is_file():
            encoding: Any = tiktoken.get_encoding(name)
        else:
            shipped = _llama_index_cache_dir()
            if shipped is None or not (shipped / cache_file).is_file():
                return None
            # tiktoken reads its cache directory from the environment only.
            previous = os.environ.get(_CACHE_ENV)
            os.environ[_CACHE_ENV] = str(shipped)
            try:
                encoding = tiktoken.get_encoding(name)
            finally:
                if previous is None:
                    os.environ.pop(_CACHE_ENV, None)
                else:
                    os.environ[_CACHE_ENV] = previous
    except Exception:  # a damaged cache file: count without the tokenizer
        return None
    encode = encoding.encode_ordinary

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _tiktoken_cache_dir() -> Path | None:
    """Where tiktoken itself looks (its rules: env, then the temp directory)."""
    for variable in (_CACHE_ENV, "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _llama_index_cache_dir() -> Path | None:
    """The tiktoken files LlamaIndex ships, found without importing LlamaIndex."""
    try:
        spec = importlib.util.find_spec("llama_index")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or ()) if spec is not None else ():
        shipped = Path(location) / "core" / "_static" / "tiktoken_cache"
        if shipped.is_dir():
            return shipped
    return None
