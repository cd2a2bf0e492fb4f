"""Dataset validation: formats, rules, options and the report (issue 3).

The validator function calls `resolve_options` then `validate_dataset`; everything here is pure
logic over the streams and callables it is given.
"""

from droptune.datasets.formats import DatasetFormat
from droptune.datasets.images import ImageProblem, ImageProblemKind
from droptune.datasets.options import (
    OptionProblem,
    OptionsError,
    TuningOptions,
    is_validation_dataset_name,
    paired_validation_name,
    resolve_options,
)
from droptune.datasets.report import DatasetReport, Issue, Severity
from droptune.datasets.validation import validate_dataset

__all__ = [
    "DatasetFormat",
    "DatasetReport",
    "ImageProblem",
    "ImageProblemKind",
    "Issue",
    "OptionProblem",
    "OptionsError",
    "Severity",
    "TuningOptions",
    "is_validation_dataset_name",
    "paired_validation_name",
    "resolve_options",
    "validate_dataset",
]
