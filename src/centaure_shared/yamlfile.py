"""YAML files read strictly: a key given twice in one mapping is an error.

Every YAML file Centaure reads (inventory, profiles, credentials, trap
definitions, SNMPv3 users, threshold rules) goes through :func:`load_yaml_file`
or :class:`StrictLoader`, so that a duplicated key, which plain YAML silently
resolves to the last value, stops the load with the file and line.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["StrictLoader", "YamlError", "load_yaml_file"]



class YamlError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file and line."""


# libyaml's parser when it is there (an inventory of 10,000 devices parses
# several times faster); the duplicate-key check below runs either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"key {key!r} is given twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_file(path: str, shown: str | None = None) -> Any:
    """Parse the YAML file ``path`` (duplicate keys refused); raise YamlError naming it."""
    shown = shown or path
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise YamlError(f"{shown}: cannot read the file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise YamlError(f"{shown}: the file is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise YamlError(f"{shown}: {where}{problem}; not valid YAML") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{shown}: not valid YAML ({e})") from None
