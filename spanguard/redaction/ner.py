"""Names and street addresses through Microsoft Presidio's analyzer (the ``ner`` extra).

Regular expressions cannot find "Jane Roe" or "12 Main Street, Springfield";
a statistical named-entity model can, at a price. This adapter runs
Presidio's ``AnalyzerEngine`` with only its spaCy NER recognizer (the
pattern recognizers Presidio also ships would duplicate spanguard's own
detectors, and its e-mail/URL recognizers fetch the public-suffix list over
the network on first use), and reports ``PERSON`` and ``LOCATION`` entities
(spaCy's ``GPE``, ``LOC`` and ``FAC`` labels) as ``[REDACTED:person]`` and
``[REDACTED:location]``.

Off by default. Cost (see docs/governance.md): ``pip install 'spanguard[ner]'``
brings spaCy and its numeric stack (~200 MB installed, measured), plus a
model you install yourself (``python -m spacy download en_core_web_lg``:
hundreds of MB on disk and in memory; ``en_core_web_sm`` is ~12 MB and finds
less); it loads once when :class:`PresidioRecognizer` is built (seconds), and
each message then costs a spaCy pass on the exporter thread: Presidio's own
overhead alone is ~1-8 ms per 2 KB here (with a rule-based pipeline), and a
statistical model adds its inference on top. A model
that is not installed is a :class:`ConfigError` at configuration time;
spanguard never downloads one (Presidio would try to, at run time).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spanguard.errors import ConfigError

__all__ = ["DEFAULT_NER_ENTITIES", "PresidioRecognizer"]

DEFAULT_NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION")
_LABELS = {"PER": "PERSON", "PERSON": "PERSON", "LOC": "LOCATION", "GPE": "LOCATION",
           "FAC": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION", "NORP": "NRP"}
_HINT = "pip install 'spanguard[ner]'"


class PresidioRecognizer:
    """Finds ``entities`` with Presidio and a spaCy model (a package name or a path).

    ``analyzer`` is for tests and advanced set-ups: a ready
    ``presidio_analyzer.AnalyzerEngine`` to use instead of building one.
    """

    def __init__(self, model: str = "en_core_web_lg", *, language: str = "en",
                 entities: Sequence[str] = DEFAULT_NER_ENTITIES,
                 score_threshold: float = 0.5, analyzer: Any | None = None) -> None:
        if not entities:
            raise ConfigError("redaction ner", "entities must not be empty",
                              f"e.g. {list(DEFAULT_NER_ENTITIES)}")
        self.model = model
        self.language = language
        self.entities = [str(entity) for entity in entities]
        self.score_threshold = score_threshold
        self._analyzer = analyzer if analyzer is not None else self._build()
        self._lock = threading.Lock()  # one spaCy pipeline, shared by every exporter thread

    def _build(self) -> Any:
        try:
            import spacy.util
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NlpEngineProvider
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        except ImportError as exc:
            raise ConfigError("redaction ner", f"Presidio is not installed ({exc})",
                              f"{_HINT}; redaction continues with the regex detectors "
                              "only") from exc
        if not (spacy.util.is_package(self.model) or Path(self.model).exists()):
            raise ConfigError("redaction ner", f"spaCy model {self.model!r} is not installed",
                              f"python -m spacy download {self.model} (or give a path to a "
                              "saved pipeline); spanguard never downloads models")
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": self.language, "model_name": self.model}],
            "ner_model_configuration": {"model_to_presidio_entity_mapping": _LABELS},
        })
        try:
            engine = provider.create_engine()
        except (OSError, ValueError) as exc:
            raise ConfigError("redaction ner", f"cannot load spaCy model {self.model!r}: {exc}",
                              "check that the model matches the installed spaCy") from exc
        registry = RecognizerRegistry(supported_languages=[self.language])
        registry.add_recognizer(SpacyRecognizer(supported_language=self.language,
                                                supported_entities=self.entities))
        return AnalyzerEngine(registry=registry, nlp_engine=engine,
                              supported_languages=[self.language])

    def find(self, text: str) -> list[tuple[int, int, str]]:
        with self._lock:
            results = self._analyzer.analyze(text=text, language=self.language,
                                             entities=self.entities,
                                             score_threshold=self.score_threshold)
        return [(r.start, r.end, str(r.entity_type).lower()) for r in results]
