"""Check request parameters against the typed parameter classes that ship in the `stripe` package."""

import importlib
import sys
import typing

import stripe
from stripe._request_options import RequestOptions

_OPTION_KEYS = set(RequestOptions.__annotations__)


def params_class(bound_method):
    """The `stripe.params` TypedDict for a service method, e.g. SessionService.create -> SessionCreateParams."""
    service = type(bound_method.__self__)
    resource = service.__name__.removesuffix("Service")
    name = f"{resource}{bound_method.__name__.title().replace('_', '')}Params"
    # stripe.checkout._session_service -> stripe.params.checkout
    parts = service.__module__.split(".")[1:-1]
    package = importlib.import_module(".".join(["stripe", "params", *parts]))
    return getattr(package, name)


def check(value, cls):
    """Every problem of `value` against TypedDict `cls` (unknown key, wrong type or literal, missing key)."""
    problems = []
    _check_typeddict(value, cls, cls.__name__, problems)
    return problems


def _resolve(annotation, module):
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        namespace = dict(vars(sys.modules[module]))
        namespace.setdefault("StripeContext", stripe.StripeContext)
        annotation = eval(annotation, namespace)  # the SDK's own generated annotation text
    origin = typing.get_origin(annotation)
    if origin in (typing.NotRequired, typing.Required):
        return _resolve(typing.get_args(annotation)[0], module)
    return annotation


def _check_typeddict(value, cls, path, problems):
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object, got {type(value).__name__}")
        return
    annotations = cls.__annotations__
    for key in getattr(cls, "__required_keys__", ()):
        if key not in value and key not in _OPTION_KEYS:
            problems.append(f"{path}.{key}: required key missing")
    for key, item in value.items():
        if key not in annotations:
            problems.append(f"{path}.{key}: unknown parameter")
            continue
        _check_value(item, _resolve(annotations[key], cls.__module__), f"{path}.{key}", cls.__module__, problems)


def _check_value(value, annotation, path, module, problems):
    annotation = _resolve(annotation, module)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        # The SDK widens enums as `Literal[...]|str` for forward compatibility; the Literal is the contract.
        if literals and isinstance(value, str):
            allowed = {v for lit in literals for v in typing.get_args(lit)}
            if value not in allowed:
                problems.append(f"{path}: {value!r} is not one of {sorted(map(str, allowed))}")
            return
        for option in args:
            trial = []
            _check_value(value, option, path, module, trial)
            if not trial:
                return
        problems.append(f"{path}: {value!r} matches none of {annotation}")
    elif origin is typing.Literal:
        if value not in args:
            problems.append(f"{path}: {value!r} is not one of {list(args)}")
    elif origin in (list, typing.List):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
        else:
            for i, item in enumerate(value):
                _check_value(item, args[0], f"{path}[{i}]", module, problems)
    elif origin in (dict, typing.Dict):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            problems.append(f"{path}: expected a map of strings")
        else:
            for k, item in value.items():
                _check_value(item, args[1], f"{path}[{k}]", module, problems)
    elif isinstance(annotation, type) and hasattr(annotation, "__required_keys__"):  # a TypedDict
        _check_typeddict(value, annotation, path, problems)
    elif annotation is type(None):
        if value is not None:
            problems.append(f"{path}: expected null")
    elif annotation is int:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: expected an integer, got {value!r}")
    elif annotation is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {value!r}")
    elif annotation is typing.Any or annotation is object:
        return
    elif isinstance(annotation, type):
        if not isinstance(value, annotation):
            problems.append(f"{path}: expected {annotation.__name__}, got {type(value).__name__}")
