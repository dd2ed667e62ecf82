"""Constrained parameter types for components and configs: the constraint lives in the type.

The registry derives each component's parameter schema from its constructor's annotations, so a
parameter annotated ``PositiveFloat`` is refused at ``load_suite`` when it is 0, negative, NaN
or infinite, with the field named — before any data is built. Schemas are strict: ``true`` is
not the integer 1 and ``"3"`` is not the number 3.

Example:
    >>> from pydantic import TypeAdapter, ValidationError
    >>> TypeAdapter(PositiveFloat).validate_python(0.5)
    0.5
    >>> try:
    ...     TypeAdapter(PositiveFloat).validate_python(-1.0)
    ... except ValidationError as err:
    ...     print(err.errors()[0]["msg"])
    Input should be greater than 0
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
UnitInterval = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A fraction in [0, 1]."""
OpenUnitInterval = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
"""A fraction in (0, 1), e.g. δ."""
HalfOpenFraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
"""A fraction in [0, 1), e.g. a dropout rate or a pruning ratio."""
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ParamBlock(BaseModel):
    """A group of parameters shared by several components (e.g. accounted Gaussian noise),
    written as a nested mapping in configs; strict, finite and closed like every schema."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, protected_namespaces=()
    )
