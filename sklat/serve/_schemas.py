"""The JSON bodies of the service's calls (pydantic models): what the OpenAPI
schema shows and what a body is validated against. Values are numbers, not
strings or booleans that happen to convert; numbers are finite."""

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
)

from .._validation import check_distinct_keys

# Bounds on what one body may hold besides its rows (the rows are bounded by
# the service's max_rows).
MAX_QUANTILES = 32
MAX_LENGTHS = 1_000_000
MAX_LIST = 2**20


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return value


Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Positive = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False, gt=0)]
Level = Annotated[float, BeforeValidator(_number), Field(gt=0, le=1)]
Confidence = Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)]
Attainment = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
Length = Annotated[StrictInt, Field(ge=1)]
Row = dict[StrictStr, Number]


def _distinct_keys(quantiles):
    return check_distinct_keys(quantiles, "quantiles", "answer")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Body):
    """An output-length distribution: lengths and their probabilities."""

    values: Annotated[list[Length], Field(min_length=1, max_length=MAX_LENGTHS)]
    probabilities: Annotated[list[Number], Field(min_length=1, max_length=MAX_LENGTHS)]


class _Decision(_Body):
    output_tokens: Length | Annotated[list[Length], Field(max_length=MAX_LIST)] | None = Field(
        None, description="N per row (one number for all), if known."
    )
    output_tokens_distribution: Distribution | None = Field(
        None, description="Where N is not known: the lengths to expect (default: training's)."
    )
    ttft_ms: Positive | None = None
    tpot_ms: Positive | None = None
    e2e_ms: Positive | None = None
    load: Number | dict[StrictStr, Number] | None = Field(
        None,
        description="One load for every row (a number for the model's one load feature, "
        "or {feature: value}); the rows then leave the load columns out.",
    )
    model_version: StrictInt | None = Field(
        None, description="Answer only from this model version (409 if it is not served)."
    )


class PredictBody(_Decision):
    """``POST /v1/predict``: latency quantiles, intervals and SLO attainment per row."""

    rows: Annotated[list[Row], Field(min_length=1)] = Field(
        description="Configurations: {feature: value}, optionally output_tokens."
    )
    quantiles: Annotated[
        list[Level], Field(min_length=1, max_length=MAX_QUANTILES), AfterValidator(_distinct_keys)
    ] = [0.5, 0.9]
    outputs: Annotated[
        list[Literal["ttft_ms", "tpot_ms", "decode_ms", "e2e_ms"]], Field(min_length=1)
    ] = Field(
        ["ttft_ms", "tpot_ms", "decode_ms", "e2e_ms"],
        description="Which latencies to answer quantiles of (the end-to-end one costs the "
        "most where N is not known); TTFT and end-to-end need a model with a prefill.",
    )
    confidence: Confidence | None = Field(
        None, description="If given, calibrated intervals at this confidence."
    )


class ChooseBody(_Decision):
    """``POST /v1/choose``: the candidate that best meets the objectives."""

    candidates: Annotated[list[Row], Field(min_length=1)]
    min_attainment: Attainment = 0.9
    prefer: StrictStr | list[Number] | None = Field(
        None,
        description="A column of the candidates to maximise among those that qualify, "
        "or one value per candidate.",
    )


Observation = dict[StrictStr, Number | Annotated[list[Number], Field(max_length=MAX_LIST)]]


class ObservationsBody(_Body):
    """``POST /v1/observations``: completed requests, in the results columns."""

    rows: Annotated[list[Observation], Field(min_length=1)] = Field(
        description="Per request: the model's features, output_tokens, T_prefill_total "
        "(the model has a prefill head), T_LLM_decode (ms), and optionally "
        "T_decode_per_step or T_decode_segment_tokens with T_decode_segment_ms."
    )
