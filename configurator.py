"""
Config files of plain assignments plus --key=value overrides, loaded into dataclasses.

    python train.py config/tinystories_nesterov.py --batch_size=32 --compile=False

A config file is parsed, never executed: each statement must be `name = value` where the value is a
literal (number, string, bool, None, list, tuple, dict), arithmetic on literals, or a name assigned
above. Later files and overrides win. Keys are checked against the dataclasses' fields: unknown keys
and wrong types are errors that name the key.
"""

import ast
import math
import operator
import typing
from dataclasses import fields

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line that names the key."""


def _eval(node, env, where):
    """Value of a literal expression; names refer to keys assigned earlier."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, env, where), _eval(node.right, env, where))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, env, where))
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env, where) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_eval(k, env, where): _eval(v, env, where) for k, v in zip(node.keys, node.values)}
    raise ConfigError(f"{where}: only literals, arithmetic and earlier keys are allowed, got `{ast.unparse(node)}`")


def read_config_file(path, env=None):
    """Assignments of a config file as a dict (env: keys already set, usable by name)."""
    env = dict(env or {})
    try:
        tree = ast.parse(open(path).read(), filename=str(path))
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    out = {}
    for stmt in tree.body:
        where = f"{path}:{stmt.lineno}"
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise ConfigError(f"{where}: a config file holds only `key = value` lines, got `{ast.unparse(stmt)}`")
        out[stmt.targets[0].id] = env[stmt.targets[0].id] = _eval(stmt.value, env, where)
    return out


def parse_value(text):
    """--key=value: a Python literal if it parses as one (3, 1e-3, True, None, [1, 2]), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv):
    """Raw key -> value from config files (positional *.py) and --key=value overrides, in order."""
    raw = {}
    for arg in argv:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"override {arg!r} must be written --key=value")
            raw[key.replace("-", "_")] = parse_value(text)
        elif arg.endswith(".py"):
            raw.update(read_config_file(arg, raw))
        else:
            raise ConfigError(f"argument {arg!r} is neither a config file (*.py) nor --key=value")
    return raw


def check_type(key, value, tp):
    """Value converted to the field type tp; ints are accepted for floats, nothing else is coerced."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arm in typing.get_args(tp):
            try:
                return check_type(key, value, arm)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {tp}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        return float(value)
    elif tp is float and isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ConfigError(f"{key}={value}: expected a finite number")
    elif tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif origin is dict and isinstance(value, dict):
        key_tp, value_tp = typing.get_args(tp) or (typing.Any, typing.Any)
        return {check_type(key, k, key_tp): check_type(key, v, value_tp) for k, v in value.items()}
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        (arm, *_) = typing.get_args(tp) or (typing.Any,)
        items = [v if arm is typing.Any else check_type(key, v, arm) for v in value]
        return origin(items)
    elif tp in (bool, str) and type(value) is tp:
        return value
    raise ConfigError(f"{key}={value!r}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")


def build(cls, raw, strict=True):
    """An instance of dataclass cls from the keys of raw that are its fields (type-checked)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    if strict and set(raw) - names:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(set(raw) - names))}")
    kwargs = {k: check_type(k, v, hints[k]) for k, v in raw.items() if k in names}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # range checks in __post_init__
        raise ConfigError(str(e)) from None


def known_keys(*classes):
    return {f.name for cls in classes for f in fields(cls)}
