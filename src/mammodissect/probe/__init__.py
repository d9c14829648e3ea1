"""Probe images: read one image, list a probe folder or manifest.

* :func:`read_image` / :func:`read_image_with_info` read a DICOM, PNG, JPEG
  or TIFF file as a 2-D float32 array (brighter = denser).
* :func:`load_probe` lists a folder tree or a CSV/TSV manifest as a
  :class:`Probe` of :class:`ProbeItem`.
"""

from __future__ import annotations

from mammodissect.probe.dataset import IMAGE_EXTENSIONS, Probe, ProbeItem, load_probe
from mammodissect.probe.images import read_image, read_image_with_info

__all__ = [
    "IMAGE_EXTENSIONS",
    "Probe",
    "ProbeItem",
    "load_probe",
    "read_image",
    "read_image_with_info",
]
