"""Console: trying a deployed detector — uploaded images, runs and their boxes,
golden cases that later deploys must pass.

Owns: models ConsoleImage, ConsoleRun, GoldenCase; images (upload checks);
invoke (S3 and Lambda invoke, through deploy/: does I/O; also the verify step's
golden check); boxes (matching); golden (saving cases); forms.
May import: portal.functions, portal.core, deploy/. Other packages use it through
this module only.
"""

from portal.console.boxes import diff
from portal.console.golden import delete_golden_case, save_golden_case
from portal.console.images import (
    SAMPLES,
    CappedUpload,
    CheckedImage,
    ConsoleError,
    check_image,
    checked_from_store,
    pixel_cap,
    sample,
)
from portal.console.invoke import invoke_image, run
from portal.console.models import ConsoleRun, GoldenCase

__all__ = [
    "CappedUpload",
    "CheckedImage",
    "ConsoleError",
    "ConsoleRun",
    "GoldenCase",
    "SAMPLES",
    "check_image",
    "checked_from_store",
    "delete_golden_case",
    "diff",
    "invoke_image",
    "pixel_cap",
    "run",
    "sample",
    "save_golden_case",
]
