"""TensorFlow-free pieces that builder worker processes need (they start fast without TF).

`EncodedRecord` is what a builder's worker returns for one image; `safe_call` runs a
worker function and turns a bad item into a message instead of an exception.
"""

import dataclasses
from typing import Optional, Sequence

from wss.data import image_io


@dataclasses.dataclass
class EncodedRecord:
    """One record's encoded content, produced by a builder's worker function."""

    filename: str
    image_bytes: bytes
    image_format: str
    height: int
    width: int
    label_bytes: Optional[bytes] = None
    image_class_labels: Optional[Sequence[int]] = None

    def to_example(self):
        """The tf.train.Example of this record (imports TensorFlow)."""
        from wss.data import schema

        return schema.make_example(
            self.image_bytes,
            self.filename,
            self.height,
            self.width,
            self.image_format,
            label_bytes=self.label_bytes,
            image_class_labels=self.image_class_labels,
        )


def safe_call(args):
    """Runs fn(item) and returns (record, None) or (None, error message)."""
    fn, item = args
    try:
        return fn(item), None
    except image_io.BadPairError as e:
        return None, str(e)
    except Exception as e:  #  # reported with the item
        return None, f"{item!r}: {type(e).__name__}: {e}"
