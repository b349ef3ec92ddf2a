"""Request and response bodies of the HTTP API (pydantic v2).

The request model is built per app (:func:`predict_request_model`) because its limits
(items per request, characters per description) are settings of ``create_app``; putting
them in the schema makes pydantic enforce them with messages that name the index and
the limit, and makes ``/docs`` show them. ``top_k`` and ``explain`` are strict so that
``"5"`` or ``true`` for ``top_k`` is an error, not silently coerced.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from hsops.serving.predictor import MAX_TOP_K  # one limit for the API and the Predictor

_EXAMPLE = {"descriptions": ["70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]"], "top_k": 5, "explain": False}


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("description is blank; send the product text")
    if not any(ch.isalnum() for ch in text):  # the same rule as ingest and the CLI
        raise ValueError("description has no letters or digits; send the product text")
    return text


def predict_request_model(max_items: int, max_text_chars: int) -> type[BaseModel]:
    """The ``POST /v1/predict`` body, with this app's limits built in."""
    description = Annotated[str, StringConstraints(max_length=max_text_chars), AfterValidator(_not_blank)]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]}),
        descriptions=(list[description], Field(
            min_length=1, max_length=max_items,
            description=f"Product descriptions, 1 to {max_items}, each at most {max_text_chars} "
                        "characters.")),
        top_k=(int, Field(5, ge=1, le=MAX_TOP_K, strict=True,
                          description="How many codes to return per item.")),
        explain=(bool, Field(False, strict=True, description="Return the terms that drove each answer.")),
    )


class Alternative(BaseModel):
    hs_code: str
    hs_description: str
    in_hs2022: bool
    confidence: float


class Term(BaseModel):
    """A word of the description that pushed towards the answer: ``weight`` is its linear
    contribution (linear kinds) or the drop in the answer's probability without it
    (other kinds); ``start``/``end`` locate it in the text sent, when it occurs there."""

    term: str
    weight: float
    start: int | None = None
    end: int | None = None


class HeadingOut(BaseModel):
    code: str = Field(description="4-digit HS heading")
    description: str = Field(description="HS 2022 text of the heading")
    confidence: float = Field(description="Calibrated probability that the heading is right: the sum "
                                          "over the model's subheadings under it")


class PredictionOut(BaseModel):
    hs_code: str = Field(description="6-digit HS subheading")
    hs_description: str = Field(description="HS 2022 text; for a code of an older edition, the "
                                            "text of its nearest HS 2022 level, marked as such")
    in_hs2022: bool = Field(description="False when hs_code is a subheading of an older HS edition "
                                        "that the training labels still used")
    confidence: float = Field(description="Calibrated probability of hs_code")
    alternatives: list[Alternative] = Field(description="Ranks 2..top_k")
    abstain: bool = Field(description="True when confidence is below the model's threshold: the "
                                      "subheading answer is not trustworthy; route to a person")
    level: Literal["subheading", "heading", "none"] = Field(
        description="The most specific level the model is sure of: 'subheading' (hs_code; abstain is "
                    "false), 'heading' (the subheading abstains but the 4-digit heading in `heading` "
                    "passes its own threshold), 'none' (unsure at both levels)")
    heading: HeadingOut | None = Field(description="The heading answer when level is 'heading', "
                                                   "else null")
    explanation: list[Term] | None
    model_version: str
    request_id: str = Field(description="The id this answer is logged under in the state store")


class PredictResponse(BaseModel):
    request_id: str
    model_version: str
    predictions: list[PredictionOut]


class Health(BaseModel):
    status: str
    model_version: str | None = None
    message: str | None = None


class ModelVersionOut(BaseModel):
    name: str
    version: str
    aliases: list[str]
    kind: str | None = None
    dataset_version: str | None = None
    git_commit: str | None = None
    created_at: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="Test-split metrics")


class ErrorBody(BaseModel):
    error: str = Field(description="Short machine-readable code, e.g. invalid_input")
    message: str = Field(description="What was wrong, for a person")
    details: list[dict] = Field(default_factory=list)
    request_id: str | None = None


# -- jobs (batch and async) --------------------------------------------------------------------
def async_request_model(max_items: int, max_text_chars: int) -> type[BaseModel]:
    """``POST /v1/predict/async``: a real-time body, answered later, optionally called back."""
    base = predict_request_model(max_items, max_text_chars)
    return create_model(
        "AsyncPredictRequest", __base__=base,
        callback_url=(str | None, Field(None, max_length=2048,
                                        description="POSTed the job's status JSON when it ends, signed "
                                                    "with X-Hsops-Signature (HMAC-SHA256)")),
    )


def batch_request_model(max_items: int) -> type[BaseModel]:
    """``POST /v1/batch``: a file in the object store, or descriptions inline."""
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"object_key": "batch/catalogue.csv", "text_column": "goods_description", "top_k": 3}]}),
        object_key=(str | None, Field(None, min_length=1, max_length=1024,
                                      description="A CSV/TSV/JSONL/Parquet/TXT object in the store, "
                                                  "under batch/")),
        descriptions=(list[str] | None, Field(None, min_length=1, max_length=max_items,
                                              description=f"Up to {max_items} descriptions inline")),
        text_column=(str | None, Field(None, min_length=1, max_length=200)),
        top_k=(int, Field(5, ge=1, le=MAX_TOP_K, strict=True)),
        callback_url=(str | None, Field(None, max_length=2048)),
    )


class JobProgress(BaseModel):
    rows_done: int
    rows_total: int | None = Field(None, description="Known from the start for inline descriptions; "
                                                     "for a file, once it has been read")
    rows_failed: int = Field(0, description="Rows answered with an error instead of a prediction")
    fraction: float | None = None


class JobOut(BaseModel):
    job_id: str
    kind: Literal["batch", "async"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    progress: JobProgress
    model_version: str | None = None
    output_key: str | None = None
    error: str | None = None
    callback: dict | None = None
    links: dict[str, str]
    result: PredictResponse | None = Field(None, description="Async jobs: the /v1/predict answer, once done")
