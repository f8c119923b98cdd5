"""Token prices as data and the cost function that reads them.

An unknown model is reported as unknown (``None``), never as free: a zero would
silently hide spend from every budget and report built on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from spanguard._toml import toml_reader
from spanguard.errors import ConfigError

_PER_TOKEN = 1_000_000.0


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per one million tokens."""

    input: float
    output: float
    cached_input: float | None = None


class PriceTable:
    """Model name -> price, with the fallbacks providers' naming needs."""

    __slots__ = ("_lookup_cache", "_prices")

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = {name.lower(): price for name, price in prices.items()}
        self._lookup_cache: dict[str, ModelPrice | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("spanguard").joinpath("data/prices.toml").read_text("utf-8")
        return cls(_parse(toml_reader.loads(text), "spanguard/data/prices.toml"))

    @classmethod
    def load(cls, path: str | Path, base: PriceTable | None = None) -> PriceTable:
        """Read a user price file; its entries override ``base`` (the shipped table)."""
        source = str(path)
        try:
            data = toml_reader.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(source, f"cannot read price file: {exc.strerror or exc}",
                              "check the path given to prices= or SPANGUARD_PRICES") from exc
        except toml_reader.TOMLDecodeError as exc:
            raise ConfigError(source, f"not valid TOML: {exc}",
                              "see spanguard/data/prices.toml for the format") from exc
        merged = dict(base._prices) if base is not None else {}
        merged.update(_parse(data, source))
        return cls(merged)

    def lookup(self, model: str | None) -> ModelPrice | None:
        if not model:
            return None
        try:
            return self._lookup_cache[model]
        except KeyError:
            pass
        price = self._resolve(model.lower())
        self._lookup_cache[model] = price
        return price

    def _resolve(self, name: str) -> ModelPrice | None:
        candidates = [name]
        for sep in (":", "/"):
            if sep in name:
                candidates.append(name.rsplit(sep, 1)[1])
        for candidate in candidates:
            if candidate in self._prices:
                return self._prices[candidate]
        for candidate in candidates:
            best = ""
            for known in self._prices:
                if candidate.startswith(known) and len(known) > len(best) and (
                    len(candidate) == len(known) or candidate[len(known)] in "-@.:"
                ):
                    best = known
            if best:
                return self._prices[best]
        return None

    def cost(
        self,
        model: str | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
    ) -> float | None:
        """USD for one call; ``input_tokens`` includes the cached ones, as providers report."""
        price = self.lookup(model)
        if price is None:
            return None
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        return (
            (input_tokens - cached) * price.input
            + cached * cached_rate
            + output_tokens * price.output
        ) / _PER_TOKEN


def _parse(data: dict[str, Any], source: str) -> dict[str, ModelPrice]:
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError(source, "missing [models.\"NAME\"] tables",
                          "each model needs input and output rates in USD per 1M tokens")
    prices: dict[str, ModelPrice] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(source, f"models.{name} must be a table")
        try:
            cached = entry.get("cached_input")
            prices[name] = ModelPrice(
                input=_rate(entry["input"]),
                output=_rate(entry["output"]),
                cached_input=None if cached is None else _rate(cached),
            )
        except KeyError as exc:
            raise ConfigError(source, f"models.{name} lacks {exc.args[0]!r}",
                              "input and output rates are required") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(source, f"models.{name}: {exc}") from exc
    return prices


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"rate must be a non-negative number, got {value!r}")
    return float(value)
