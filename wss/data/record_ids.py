"""The id of a record, from its image/filename: one rule for Python and for tf.data.

The id is the filename without a final .jpg, .jpeg or .png extension in any letter case
(`a.Jpg` -> `a`); other names are their own id. Id lists, the scan of a split and the
stream filter all use this rule, so an id list never selects a record the stream drops.
"""

import re

import tensorflow as tf

# Whole-name match (no `$`-before-newline surprises in either regex engine): group 1 is
# the id. RE2 (tf.strings) and Python's re read this pattern the same way.
ID_PATTERN = r"(?is)^(.+)\.(?:jpe?g|png)$"
_ID_RE = re.compile(ID_PATTERN)


def image_id(filename: str) -> str:
    """The id of a record: image/filename without a final JPEG/PNG extension (any case)."""
    m = _ID_RE.fullmatch(filename)
    return m.group(1) if m else filename


def image_id_tensor(filename: tf.Tensor) -> tf.Tensor:
    """image_id of a string tensor (any shape), in the graph."""
    return tf.strings.regex_replace(filename, ID_PATTERN, r"\1", replace_global=False)
