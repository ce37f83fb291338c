"""The OpenCV object detector Lambda (handler string `detector.process_image`).

Takes an image from S3 (`{"bucket", "key"}`), inline (`{"image_base64"}`) or as
the base64 body of a Function URL / API Gateway request, runs one of OpenCV's
Haar cascades or its HOG people detector on a copy at most MAX_SIDE pixels on
its longer side, and returns the boxes in the original image's pixel
coordinates. JPEG, PNG, WebP and BMP are accepted, sized from their headers
before a byte of pixel data is decoded.

Modules: inputs (the image from the event or S3), options (the detector and its
options, as options.json describes them), sniff (format and size from the
header, then the decode), detection (the search and its time budget), grouping
(windows into boxes, as OpenCV groups them) and adapter (the Lambda and HTTP
entry point, and the answer).
"""

from detector.adapter import __version__, process_image
from detector.errors import BadInput

__all__ = ["BadInput", "__version__", "process_image"]
