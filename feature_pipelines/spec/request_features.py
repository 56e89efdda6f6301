"""Request-time features: Python functions of a request's fields and of the features fetched for it.

Declared in a file of `feature_defs/` and listed by name in a retrieval spec
(`request_features: [amount_to_mean_30d]`):

    @request_feature(request={"amount": "float64"}, features=["amount_mean_30d"], output="float64")
    def amount_to_mean_30d(amount, amount_mean_30d):
        return None if amount is None or not amount_mean_30d else amount / amount_mean_30d

`RequestFeatures.apply` is their one evaluation: training and inference sets (both join engines),
`FeatureStore.get_online_features` and the feature server all call it, row by row, so one
definition gives the same values everywhere. A request field is an observation column offline,
a column of the entity rows online, and a field of each entity in a server request.

Nulls: a null input (a null request field, a feature without a value for the entity, or one past
its temporal_join_lookback) reaches the function as None, and the function may return None. NaN
counts as null both ways, and so does an infinite float output (JSON has neither). Every input
reaches the function as a plain Python value of its type (float64: a float), whatever the caller
held (a NumPy scalar, an int in a float column, a pandas NA). A function that raises, or returns
another type than it declares, is a bug in its definition: `RequestFeatureError`, naming it and the
inputs it failed on.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from feature_pipelines.errors import (
    FeatureStoreError,
    RequestFeatureError,
    RequestFieldError,
    RetrievalError,
    SpecError,
    inline,
)
from feature_pipelines.spec.dtypes import normalize_dtype

if TYPE_CHECKING:
    from feature_pipelines.spec.catalog import Catalog
    from feature_pipelines.spec.retrieval_spec import FeatureSelection

# Types a request field and an output may have: what JSON, pandas and Spark all hold exactly.
VALUE_TYPES = ("bool", "float64", "int64", "string")
# Feature types a function may read (32-bit ones arrive as Python ints and floats).
FEATURE_TYPES = (*VALUE_TYPES, "float32", "int32")
_INT64 = (-(2**63), 2**63 - 1)
_NULLS = {"NAType", "NaTType"}  # pandas' missing-value markers
EXPECTED = {"bool": "true, false or null", "float64": "a number or null", "int64": "a whole number or null",
            "string": "a string or null", "float32": "a number or null", "int32": "a whole number or null"}


class _Unfit(Exception):
    """A value that does not fit a type (internal: callers raise the error naming where it was)."""


@dataclass(frozen=True, eq=False)
class RequestFeature:
    """A declared request-time feature: its function, inputs and output type (see `request_feature`)."""

    name: str
    function: Callable[..., Any]
    request: Mapping[str, str]  # request field -> type
    features: tuple[str, ...]  # fetched features, by name (or `feature_set__feature`)
    output: str
    parameters: tuple[str, ...]  # the function's parameters, in order: inputs are passed positionally
    description: str = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    @property
    def file(self) -> str:
        return self.function.__code__.co_filename

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.parameters)}) -> {self.output}"


def request_feature(
    *, output: str, request: Mapping[str, str] | None = None, features: Sequence[str] = (), name: str | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], RequestFeature]:
    """Declare a request-time feature: `request` maps the request fields it reads to their types,
    `features` names the fetched features it reads, `output` is the type it returns. The
    function's parameters are exactly those inputs; it is called once per row with plain Python
    values (None for nulls) and returns a value of `output` or None. Its name (or `name`) is the
    output column, and what retrieval specs list under `request_features:`."""

    def declare(function: Callable[..., Any]) -> RequestFeature:
        return _declared(function, output, dict(request or {}), tuple(features), name, description)

    return declare


def _declared(function: Callable[..., Any], output: str, request: dict[str, str], features: tuple[str, ...],
              name: str | None, description: str | None) -> RequestFeature:
    name = name or getattr(function, "__name__", "")
    where = f"request feature {name!r}"
    if not callable(function) or not str(name).isidentifier():
        raise SpecError(f"{where}: @request_feature decorates a function whose name is a Python identifier.")
    output = normalize_dtype(output, field=f"{where}: output")
    if output not in VALUE_TYPES:
        raise SpecError(f"{where}: output type {output!r} is not supported; use one of {', '.join(VALUE_TYPES)}.")
    for field_name, dtype in list(request.items()):
        request[field_name] = normalize_dtype(dtype, field=f"{where}: request field {field_name!r}")
        if request[field_name] not in VALUE_TYPES:
            raise SpecError(f"{where}: request field {field_name!r} has type {request[field_name]!r}, which request "
                            f"fields cannot have; use one of {', '.join(VALUE_TYPES)}.")
    both = sorted(set(request) & set(features))
    if both:
        raise SpecError(f"{where}: {both} is both a request field and a feature; rename the request field.")
    inputs = [*request, *features]
    if not inputs:
        raise SpecError(f"{where}: reads no input; declare request={{...}} fields or features=[...].")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: its signature cannot be read ({inline(exc)}); decorate a plain function.") from exc
    parameters = tuple(signature.parameters)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if sorted(parameters) != sorted(inputs) or any(p.kind not in positional for p in signature.parameters.values()):
        raise SpecError(f"{where}: the function's parameters ({', '.join(parameters)}) must be exactly its inputs "
                        f"({', '.join(inputs)}): the request fields and features it reads; rename them to match.")
    description = description if description is not None else inspect.getdoc(function) or ""
    return RequestFeature(name, function, request, features, output, parameters, description)


def iter_request_features(values: Iterable[Any]) -> list[RequestFeature]:
    """The RequestFeature objects among a module's attributes."""
    found: list[RequestFeature] = []
    for value in values:
        if isinstance(value, RequestFeature) and all(value is not f for f in found):
            found.append(value)
    return found


@dataclass(frozen=True)
class BoundRequestFeature:
    """A request feature as one retrieval spec uses it: the column each parameter reads."""

    feature: RequestFeature
    columns: tuple[str, ...]  # per parameter: a request field, or the output column of a fetched feature

    @property
    def name(self) -> str:
        return self.feature.name

    def evaluate(self, inputs: Sequence[Sequence[Any]]) -> list[Any]:
        """The function on each row of `inputs` (one converted column per parameter)."""
        function, dtype = self.feature.function, self.feature.output
        out = []
        for arguments in zip(*inputs):
            try:
                result = function(*arguments)
            except Exception as exc:  # any exception: the function's bug, shown with what it was given
                raise RequestFeatureError(
                    f"request feature {self.name} ({self.feature.file}) raised {type(exc).__name__}: {inline(exc)} "
                    f"for {self._shown(arguments)}; fix the function: it gets None for a null input and returns "
                    f"{dtype} or None") from exc
            try:
                out.append(_output(result, dtype))
            except _Unfit:
                raise RequestFeatureError(
                    f"request feature {self.name} ({self.feature.file}) returned {result!r} "
                    f"({type(result).__name__}) for {self._shown(arguments)}, not {dtype} or None; fix the function"
                ) from None
        return out

    def _shown(self, arguments: Sequence[Any]) -> str:
        return ", ".join(f"{p}={a!r}" for p, a in zip(self.feature.parameters, arguments))


@dataclass(frozen=True)
class RequestFeatures:
    """The request features of one retrieval spec, bound to its columns; empty (falsy) when it has none."""

    bound: tuple[BoundRequestFeature, ...] = ()
    inputs: Mapping[str, str] = field(default_factory=dict)  # every column any of them reads -> its type
    fields: Mapping[str, str] = field(default_factory=dict)  # the request fields among those -> type

    def __bool__(self) -> bool:
        return bool(self.bound)

    @property
    def columns(self) -> tuple[str, ...]:
        """The output columns, in the spec's order."""
        return tuple(b.name for b in self.bound)

    @property
    def outputs(self) -> dict[str, str]:
        """Output column -> type."""
        return {b.name: b.feature.output for b in self.bound}

    def check_columns(self, names: Iterable[str], where: str) -> None:
        """`where` (e.g. "observations") holds every request field, and no column named like an output."""
        given = set(names)
        missing = [f for f in self.fields if f not in given]
        if missing:
            readers = sorted({b.name for b in self.bound for f in missing if f in b.feature.request})
            types = ", ".join(f"{f} ({self.fields[f]})" for f in missing)
            raise RetrievalError(f"{where} lack request field(s) {missing} that request feature(s) {readers} read; "
                                 f"add them: {types}.")
        clash = [c for c in self.columns if c in given]
        if clash:
            raise RetrievalError(f"{where} have column(s) {clash} named like request features of the spec; "
                                 "rename those columns.")

    def apply(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, list]:
        """Each request feature's output column, from equal-length `columns` holding every input
        (request fields and fetched features by output column). RequestFieldError for a request
        field value of another type; RequestFeatureError when a function fails."""
        if not self.bound:
            return {}
        converted = {name: _converted(name, dtype, columns[name]) for name, dtype in self.inputs.items()}
        return {b.name: b.evaluate([converted[c] for c in b.columns]) for b in self.bound}


NO_REQUEST_FEATURES = RequestFeatures()


def bind_request_features(where: str, names: Sequence[str], catalog: Catalog,
                          selections: Sequence[FeatureSelection]) -> RequestFeatures:
    """The request features `names` (of a retrieval spec, `where`) over its `selections`: each
    input found, every name free. Errors name `where` and the fix."""
    if not names:
        return NO_REQUEST_FEATURES
    keys = {e.name for s in selections for e in s.feature_set.entities}
    fetched = {c for s in selections for c in s.columns}
    fields: dict[str, tuple[str, str]] = {}  # field -> (type, the first request feature reading it)
    inputs: dict[str, str] = {}
    bound: list[BoundRequestFeature] = []
    for name in names:
        at = f"{where}, request feature {name!r}"
        try:
            feature = catalog.request_feature(name)
        except FeatureStoreError as exc:
            raise RetrievalError(f"{at}: {str(exc).rstrip('.')}.") from exc
        if any(b.name == name for b in bound):
            raise RetrievalError(f"{at}: listed twice under request_features; list it once.")
        columns = []
        for parameter in feature.parameters:
            if parameter in feature.request:
                dtype = feature.request[parameter]
                if parameter in keys or parameter in fetched:
                    what = "an entity key" if parameter in keys else "a feature column"
                    raise RetrievalError(f"{at}: request field {parameter!r} has the name of {what} of the spec; "
                                         "give the request field another name.")
                known, reader = fields.setdefault(parameter, (dtype, name))
                if known != dtype:
                    raise RetrievalError(f"{at}: request field {parameter!r} is {dtype} here but {known} in request "
                                         f"feature {reader!r}; declare one type for it in both.")
                column = parameter
            else:
                column, dtype = _fetched(at, parameter, catalog, selections)
            inputs[column] = dtype
            columns.append(column)
        bound.append(BoundRequestFeature(feature, tuple(columns)))
    for b in bound:
        if b.name in keys or b.name in fetched or b.name in fields:
            raise RetrievalError(f"{where}, request feature {b.name!r}: its output column has the name of a key, "
                                 "feature or request field of the spec; rename the function (or pass name=...).")
    return RequestFeatures(tuple(bound), inputs, {f: dtype for f, (dtype, _) in fields.items()})


def _fetched(at: str, parameter: str, catalog: Catalog, selections: Sequence[FeatureSelection]) -> tuple[str, str]:
    """The output column and type of the fetched feature a parameter names: `feature`, or
    `feature_set__feature` when several sets of the spec have that feature."""
    set_name, _, feature = parameter.rpartition("__") if "__" in parameter else ("", "", parameter)
    matches = [(s, f, c) for s in selections for f, c in zip(s.features, s.columns)
               if f == feature and set_name in ("", s.feature_set.name)]
    if not matches:
        having = [f"'{fs.name}:{fs.version}:{feature}'" for fs in catalog if feature in fs.feature_names]
        hint = f"add its entry ({' or '.join(having)}) to the spec's features" if having else \
            "declare it in a feature set first"
        raise RetrievalError(f"{at}: reads feature {parameter!r}, which the spec does not fetch; {hint}, or fix the "
                             "function's features=.")
    if len(matches) > 1:
        sets = [s.feature_set.key for s, _, _ in matches]
        raise RetrievalError(f"{at}: feature {parameter!r} is fetched from {sets}; name the one it reads like "
                             f"'{matches[0][0].feature_set.name}__{feature}' in features= and in its parameters.")
    selection, feature, column = matches[0]
    dtype = next(f.dtype for f in selection.feature_set.features if f.name == feature)
    if dtype not in FEATURE_TYPES:
        raise RetrievalError(f"{at}: feature {parameter!r} of {selection.feature_set.key} is {dtype}, which request "
                             f"features cannot read; they read {', '.join(FEATURE_TYPES)} features.")
    return column, dtype


# --- values ---------------------------------------------------------------------------------------
# Each converter returns a plain Python value of its type, or None for a null, or raises _Unfit.


def _unwrapped(value: Any, convert: Callable[[Any], Any]) -> Any:
    """A value of no plain Python type: a pandas null marker, or a NumPy scalar to unwrap."""
    if type(value).__name__ in _NULLS:
        return None
    item = getattr(value, "item", None)
    try:
        plain = item() if callable(item) else value
    except Exception:  # an array-like of several values, say: not a scalar
        raise _Unfit from None
    if type(plain) is type(value):
        raise _Unfit
    return convert(plain)


def _float(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return None if value != value else value  # NaN is null, as in a pandas column
    if kind is int:
        return float(value)
    return _unwrapped(value, _float)


def _int(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        if _INT64[0] <= value <= _INT64[1]:
            return value
        raise _Unfit
    if kind is float:  # pandas holds an int column with nulls as floats
        if value != value:
            return None
        if value.is_integer():
            return _int(int(value))
        raise _Unfit
    return _unwrapped(value, _int)


def _bool(value: Any) -> bool | None:
    return value if type(value) is bool else _unwrapped(value, _bool)


def _string(value: Any) -> str | None:
    return str(value) if isinstance(value, str) else _unwrapped(value, _string)


_CONVERT = {"float64": _float, "float32": _float, "int64": _int, "int32": _int, "bool": _bool, "string": _string}


def field_value(value: Any, dtype: str) -> Any:
    """`value` as the plain Python value of `dtype` a request feature receives (None for a null);
    ValueError when it does not fit."""
    try:
        return None if value is None else _CONVERT[dtype](value)
    except _Unfit:
        raise ValueError(f"{value!r} is not {EXPECTED[dtype]}") from None


def _converted(column: str, dtype: str, values: Sequence[Any]) -> list[Any]:
    convert = _CONVERT[dtype]
    try:
        return [None if v is None else convert(v) for v in values]
    except _Unfit:
        for row, value in enumerate(values):
            try:
                field_value(value, dtype)
            except ValueError:
                raise RequestFieldError(column, row, value, EXPECTED[dtype]) from None
        raise


def _output(value: Any, dtype: str) -> Any:
    """A function's result as its declared type (None for null, NaN or an infinite float)."""
    if value is None:
        return None
    kind = type(value)
    if dtype == "float64" and (kind is float or kind is int):
        number = float(value)
        return number if math.isfinite(number) else None
    if (dtype == "int64" and kind is int and _INT64[0] <= value <= _INT64[1]) or (dtype == "bool" and kind is bool) \
            or (dtype == "string" and kind is str):
        return value
    return _unwrapped(value, lambda plain: _output(plain, dtype))
